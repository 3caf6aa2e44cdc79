"""Top-k then top-p sampling without sorting the whole vocabulary.

transformers applies `TopKLogitsWarper` then `TopPLogitsWarper`; the second sorts all 262,144 logits of
Gemma 3 at every step although top-k has already left k candidates. On 2 CPU cores at batch 32 that sort
costs more than the forward pass. `TopKTopPLogitsWarper` computes the same filtered scores from the k
candidates: it returns a full-vocabulary tensor, bit-identical to what the two warpers return (kept
tokens keep their scores, the rest hold the filter value), so transformers' own softmax and multinomial
draw the same token for the same seed.

Exactness: the kept set depends on float32 sums that may round differently over k values than over the
sorted vocabulary, and on the sort order of tied logits. Rows where either could matter (a cumulative
probability within rounding distance of the cut, a tie across the top-k or top-p boundary, non-finite maxima, NaN)
go through transformers' own two warpers, so every row is filtered exactly as transformers filters it.

`install_fast_topk_topp()` makes `GenerationMixin._get_logits_processor` swap an adjacent TopK+TopP pair
for the fused warper on CPU, which reaches both the kit's `generate` and TRL's GRPO rollouts (TRL calls
`model.generate(generation_config=...)`). Checked against transformers 5.17 (`TopKLogitsWarper.top_k`,
`TopPLogitsWarper.top_p/.min_tokens_to_keep/.filter_value`, warpers in the order temperature, top-k,
top-p). On a transformers upgrade rerun tests/test_fast_sampling.py: it compares against the installed
warpers and fails if their behaviour or attributes change.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# A sum of k float32 probabilities is off by at most ~k * eps: rows whose cumulative probability lies
# within ROUNDING_ULPS * k * eps of the top-p threshold are filtered by transformers' own warpers.
ROUNDING_ULPS = 4
# Beyond this many candidates the fused path saves little: the pair of transformers warpers runs instead.
MAX_FUSED_K = 4096
_PATCH_FLAG = "_haiku_kit_fast_topk_topp"


class TopKTopPLogitsWarper:
    """Fused replacement for transformers' TopKLogitsWarper followed by TopPLogitsWarper."""

    def __init__(self, top_k: int, top_p: float, min_tokens_to_keep: int = 1, filter_value: float = -float("inf")):
        from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

        # the reference pair validates the arguments and handles the rows the fused path cannot decide
        self.reference_top_k = TopKLogitsWarper(top_k, filter_value=filter_value,
                                                min_tokens_to_keep=min_tokens_to_keep)
        self.reference_top_p = TopPLogitsWarper(top_p, filter_value=filter_value,
                                                min_tokens_to_keep=min_tokens_to_keep)
        self.top_k = self.reference_top_k.top_k  # already max(top_k, min_tokens_to_keep)
        self.top_p = self.reference_top_p.top_p
        self.min_tokens_to_keep = min_tokens_to_keep
        self.filter_value = filter_value
        self.fallback_rows = 0  # rows sent to the reference warpers, for tests and benchmarks

    @classmethod
    def from_pair(cls, top_k_warper, top_p_warper) -> TopKTopPLogitsWarper:
        fused = cls(top_k_warper.top_k, top_p_warper.top_p, top_p_warper.min_tokens_to_keep,
                    top_p_warper.filter_value)
        fused.reference_top_k, fused.reference_top_p = top_k_warper, top_p_warper
        return fused

    def reference(self, input_ids, scores):
        return self.reference_top_p(input_ids, self.reference_top_k(input_ids, scores))

    def __call__(self, input_ids, scores):
        import torch

        vocab = scores.size(-1)
        k = min(self.top_k, vocab)
        if scores.dim() != 2 or k >= vocab or k > MAX_FUSED_K:
            return self.reference(input_ids, scores)
        # k+1 values: the extra one tells whether a tie crosses the top-k boundary
        values, indices = torch.topk(scores, k + 1, dim=-1)
        kth, next_value = values[:, k - 1], values[:, k]
        ascending, asc_indices = values[:, :k].flip(-1), indices[:, :k].flip(-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)  # the same comparison, in the same dtype, as TopPLogitsWarper
        remove[..., -self.min_tokens_to_keep:] = False
        removed = remove.sum(dim=-1)  # a prefix: cumulative probabilities never decrease

        threshold = torch.tensor(1 - self.top_p, dtype=cumulative.dtype)
        margin = ROUNDING_ULPS * k * torch.finfo(cumulative.dtype).eps
        rows = torch.arange(scores.size(0))
        last_removed = (removed - 1).clamp(min=0)
        first_kept = removed.clamp(max=k - 1)
        has_removed = removed > 0
        unsure = (kth == next_value) & torch.isfinite(kth)  # TopK would keep more than k tokens
        unsure |= ~torch.isfinite(values[:, 0]) | torch.isnan(values).any(dim=-1)
        unsure |= has_removed & ((threshold - cumulative[rows, last_removed]).abs() < margin)
        unsure |= (cumulative[rows, first_kept] - threshold).abs() < margin
        unsure |= has_removed & (ascending[rows, last_removed] == ascending[rows, first_kept])

        kept_values = ascending.masked_fill(remove, self.filter_value)
        out = torch.full_like(scores, self.filter_value)
        out.scatter_(1, asc_indices, kept_values)
        if unsure.any():
            which = unsure.nonzero().squeeze(-1)
            self.fallback_rows += int(which.numel())
            out[which] = self.reference(input_ids[which] if input_ids is not None else None, scores[which])
        return out


def fuse_topk_topp(processors):
    """Replace each TopKLogitsWarper directly followed by a TopPLogitsWarper with the fused warper (in place)."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    i = 0
    while i < len(processors) - 1:
        first, second = processors[i], processors[i + 1]
        if type(first) is TopKLogitsWarper and type(second) is TopPLogitsWarper:
            processors[i:i + 2] = [TopKTopPLogitsWarper.from_pair(first, second)]
        i += 1
    return processors


def _on_cpu(device) -> bool:
    return device is None or str(device).split(":")[0] == "cpu"


def install_fast_topk_topp() -> bool:
    """Patch transformers' GenerationMixin so CPU sampling uses the fused warper; True if newly installed.

    Idempotent. Only CPU generation is changed: on CUDA the full sort is cheap and Unsloth owns generate.
    """
    from transformers.generation.utils import GenerationMixin

    original = GenerationMixin._get_logits_processor
    if getattr(original, _PATCH_FLAG, False):
        return False

    def _get_logits_processor(self, generation_config, *args, **kwargs):
        processors = original(self, generation_config, *args, **kwargs)
        device = kwargs.get("device", getattr(self, "device", None))
        return fuse_topk_topp(processors) if _on_cpu(device) else processors

    setattr(_get_logits_processor, _PATCH_FLAG, True)
    _get_logits_processor.__wrapped__ = original
    GenerationMixin._get_logits_processor = _get_logits_processor
    logger.info("CPU sampling: top-p applied inside the top-k candidates (no full-vocabulary sort)")
    return True


def uninstall_fast_topk_topp() -> bool:
    """Restore transformers' own `_get_logits_processor`; True if a patch was removed."""
    from transformers.generation.utils import GenerationMixin

    current = GenerationMixin._get_logits_processor
    if not getattr(current, _PATCH_FLAG, False):
        return False
    GenerationMixin._get_logits_processor = current.__wrapped__
    return True
