"""How likely the model finds a written answer: mean log-probability per completion token.

The constrained decoder can draw several valid drafts of one poem; the draft the model itself
finds most likely is the one least bent by the constraint (fewer lines cut mid-phrase). Only the
completion's positions go through the 262k-token head (`logits_to_keep`), and each log-prob is
the gathered logit minus the row's logsumexp, so no full log-softmax copy is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from haiku_kit.chat_format import encode

__all__ = ["mean_logprobs"]


def mean_logprobs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                  batch_size: int = 8) -> list[float]:
    """Mean log p(token | prompt, earlier tokens) over each completion's tokens.

    prompts are formatted model input (as chat_format.prompt_strings returns); a completion that
    adds no token scores -inf. The model is put in eval mode and restored.
    """
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"mean_logprobs: {len(prompts)} prompts but {len(completions)} completions")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            heads = list(prompts[start : start + batch_size])
            tails = list(completions[start : start + batch_size])
            full = encode(tokenizer, [h + t for h, t in zip(heads, tails)]).to(model.device)
            new = [int(n) - len(encode(tokenizer, [h])["input_ids"][0])
                   for h, n in zip(heads, full["attention_mask"].sum(1))]
            keep = max(max(new), 1)
            with torch.inference_mode():
                # Left padding puts every completion at the right edge: keep+1 positions suffice.
                logits = model(**full, logits_to_keep=keep + 1).logits[:, :-1].float()
                targets = full["input_ids"][:, -keep:]
                picked = logits.gather(-1, targets[..., None]).squeeze(-1)
                token_lp = picked - torch.logsumexp(logits, dim=-1)
            for row, n in enumerate(new):
                scores.append(float(token_lp[row, keep - n :].mean()) if n > 0 else float("-inf"))
    finally:
        model.train(was_training)
    return scores
