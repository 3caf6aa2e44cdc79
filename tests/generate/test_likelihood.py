"""mean_logprobs against the plain full-softmax computation, on the tiny random Gemma 3."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from haiku_kit.model.load import load_model

    return load_model(str(tiny_model_dir), backend="hf", lora=None)


def reference(model, tokenizer, prompt: str, completion: str) -> float:
    """Unbatched, every position through the head, full log_softmax."""
    import torch

    from haiku_kit.model.chat import encode

    head = encode(tokenizer, [prompt])["input_ids"][0]
    ids = encode(tokenizer, [prompt + completion])["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    token_lp = logp.gather(-1, targets[:, None]).squeeze(-1)[len(head) - 1 :]
    return float(token_lp.mean())


def test_mean_logprobs_match_full_softmax_with_padding_and_batches(tiny):
    from haiku_kit.data.splits import build_prompt
    from haiku_kit.generate.constrained import mean_logprobs
    from haiku_kit.model.chat import prompt_strings

    model, tokenizer = tiny
    prompts = prompt_strings(tokenizer, [build_prompt(t) for t in
                                         ("snow", "a lighthouse in thick fog", "rain", "moss")])
    completions = ["white hush on the roofs\n", "a beam turns slowly\nwaves", "drip", "a"]
    want = [reference(model, tokenizer, p, c) for p, c in zip(prompts, completions)]
    for batch_size in (1, 3, 8):  # unpadded, mixed, everything in one left-padded batch
        got = mean_logprobs(model, tokenizer, prompts, completions, batch_size=batch_size)
        assert got == pytest.approx(want, abs=1e-4)
    assert len({round(w, 3) for w in want}) == 4  # the rows are really different


def test_mean_logprobs_edge_cases(tiny):
    from haiku_kit.generate.constrained import mean_logprobs

    model, tokenizer = tiny
    model.train()
    assert mean_logprobs(model, tokenizer, ["<bos>hello"], [""]) == [-math.inf]
    assert model.training  # restored
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        mean_logprobs(model, tokenizer, ["a", "b"], ["c"])
