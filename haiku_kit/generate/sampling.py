"""Top-k then top-p sampling on CPU without touching the whole vocabulary twice per step.

transformers applies `TopKLogitsWarper` then `TopPLogitsWarper` and then, in `GenerationMixin._sample`,
a softmax and `torch.multinomial` over every vocabulary entry (262,144 for Gemma 3, 93,300 on the
kit's English-trimmed model). On 2 CPU cores at batch 32 the top-p sort and then the draw (torch
draws one exponential per vocabulary entry) each cost more than the forward pass. This module
removes both, keeping the same *distribution*:

1. `TopKTopPLogitsWarper` computes the filtered scores from the k top-k candidates (no sort of the
   vocabulary). It returns a full-vocabulary tensor bit-identical to what the two warpers return
   (kept tokens keep their scores, the rest hold the filter value), and attaches the kept candidates
   (their ids and scores) to that tensor.
2. The next token is drawn among those candidates: softmax over the k kept scores (renormalised),
   `torch.multinomial` over k, mapped back to vocabulary ids. That is the distribution transformers'
   full-vocabulary softmax gives (filtered tokens have probability 0 there), up to float rounding of
   the normalising sum; tests check the kept set and probabilities against transformers' own warpers
   and run a chi-square test over 100,000 draws.

Tokens for a seed: the draw consumes the random generator differently (k exponentials per row instead
of one per vocabulary entry), so a seed gives other tokens than transformers' draw. This changed once,
in the release that introduced the candidate draw (issue #40); the distribution did not change.
`install_fast_topk_topp(candidate_draw=False)` keeps transformers' full-row draw (the fused warper
only) for anyone who must reproduce tokens from an earlier release; the kit's own calls
(`generate`, the GRPO builder) leave that choice as it is.

Exactness of the kept set: it depends on float32 sums that may round differently over k values than
over the sorted vocabulary, and on the sort order of tied logits. Rows where either could matter (a
cumulative probability within rounding distance of the cut, a tie across the top-k or top-p boundary,
non-finite maxima, NaN) go through transformers' own two warpers, so every row is filtered exactly as
transformers filters it; those rows are then drawn from their whole filtered row (softmax over the
vocabulary, as transformers does), since a tie can keep more than k tokens.

How the draw reaches `generate`. `install_fast_topk_topp()` patches two methods of
`GenerationMixin`, which reaches both the kit's `generate` and TRL's GRPO rollouts (TRL calls
`model.generate(generation_config=...)`):
- `_get_logits_processor` swaps an adjacent TopK+TopP pair for the fused warper on CPU;
- `_sample` runs transformers' own `_sample` code object unchanged, with two module globals rebound
  for that call only: `torch` and `nn` resolve to thin proxies whose `multinomial` and
  `nn.functional.softmax` recognise the fused warper's tensor and draw among its candidates; every
  other name, and every other tensor, goes to torch itself. This only happens when sampling on CPU
  with the fused warper as the *last* logits processor (so nothing can change the scores after it
  attached its candidates); any other call runs the original `_sample` untouched.
Why this route: copying `_sample` (about 150 lines that change with every transformers release:
prefill, deferred stop checks, compile, synced GPUs) would freeze one version of it; rewriting its
source text is fragile. Rebinding two names keeps transformers' loop as installed. Before enabling it
the install checks `_sample`'s source for the two statements it relies on
(`probs = nn.functional.softmax(next_token_scores, dim=-1)` and
`torch.multinomial(probs, num_samples=1)`, with `probs` used nowhere else); if a transformers
upgrade changes them, the candidate draw stays off (logged) and sampling falls back to transformers'
full-row draw, still exact. tests/generate/test_sampling.py asserts the draw is on for the installed
version, so such an upgrade fails a test instead of silently losing the speed.

Checked against transformers 5.17 (`TopKLogitsWarper.top_k`, `TopPLogitsWarper.top_p/.min_tokens_to_keep/
.filter_value`, warpers in the order temperature, top-k, top-p, custom processors before them). On a
transformers upgrade rerun tests/generate/test_sampling.py: it compares against the installed warpers and
fails if their behaviour or attributes change.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import types

logger = logging.getLogger(__name__)

# A sum of k float32 probabilities is off by at most ~k * eps: rows whose cumulative probability lies
# within ROUNDING_ULPS * k * eps of the top-p threshold are filtered by transformers' own warpers.
ROUNDING_ULPS = 4
# Beyond this many candidates the fused path saves little: the pair of transformers warpers runs instead.
MAX_FUSED_K = 4096
_PATCH_FLAG = "_haiku_kit_fast_topk_topp"
# attribute of the fused warper's output tensor: its kept candidates (`_Candidates`)
_CANDIDATES = "_haiku_kit_candidates"
# attribute of the probabilities the patched softmax returns: how to map a draw back to ids (`_Draw`)
_DRAW = "_haiku_kit_draw"
# the statements of transformers' `_sample` the candidate draw relies on (see the module docstring)
_SAMPLE_SOFTMAX = "probs = nn.functional.softmax(next_token_scores, dim=-1)"
_SAMPLE_MULTINOMIAL = "torch.multinomial(probs, num_samples=1)"


class _Candidates:
    """The kept candidates of one fused-warper call: ids and scores (filter value where top-p removed
    one) in ascending order, and the rows whose filtering came from transformers' warpers."""

    __slots__ = ("ids", "unsure", "values", "warper")

    def __init__(self, warper, ids, values, unsure):
        self.warper, self.ids, self.values, self.unsure = warper, ids, values, unsure


class _Draw:
    """What the patched multinomial needs besides the candidate probabilities: their ids, and the
    full-row probabilities of the rows drawn from their whole filtered row."""

    __slots__ = ("full", "ids", "rows", "warper")

    def __init__(self, warper, ids, rows, full):
        self.warper, self.ids, self.rows, self.full = warper, ids, rows, full


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
        self.candidate_draws = 0  # rows drawn among the k candidates (the patched `_sample`)
        self.full_row_draws = 0  # rows drawn from their whole filtered row (fallback rows)

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
        if self.filter_value == -float("inf"):  # filtered tokens have probability 0: a draw among the kept is exact
            setattr(out, _CANDIDATES, _Candidates(self, asc_indices, kept_values, unsure))
        return out


# --------------------------------------------------------------------------- the draw among the candidates


def _candidate_softmax(scores, *args, **kwargs):
    """`nn.functional.softmax` as the patched `_sample` sees it.

    For the fused warper's output: probabilities over its k kept candidates ([batch, k], renormalised),
    tagged with how to map a draw back to vocabulary ids. Anything else goes to torch."""
    import torch

    candidates = getattr(scores, _CANDIDATES, None)
    dim = kwargs.get("dim", args[0] if args else None)
    if candidates is None or len(args) + len(kwargs) != 1 or dim not in (-1, scores.dim() - 1):
        return torch.nn.functional.softmax(scores, *args, **kwargs)
    probs = candidates.values.softmax(dim=-1)
    rows = candidates.unsure.nonzero().squeeze(-1)
    full = None
    if rows.numel():  # filtered by transformers' warpers: drawn from the whole row, as transformers does
        full = torch.nn.functional.softmax(scores[rows], dim=-1)
        probs[rows] = 1.0  # placeholder weights (the row may be all -inf): this draw is replaced
    setattr(probs, _DRAW, _Draw(candidates.warper, candidates.ids, rows, full))
    return probs


def _candidate_multinomial(probs, num_samples, *args, **kwargs):
    """`torch.multinomial` as the patched `_sample` sees it: draws among the candidates of a
    `_candidate_softmax` result and returns vocabulary ids; anything else goes to torch."""
    import torch

    draw = getattr(probs, _DRAW, None)
    if draw is None:
        return torch.multinomial(probs, num_samples, *args, **kwargs)
    picks = torch.multinomial(probs, num_samples, *args, **kwargs)
    tokens = draw.ids.gather(1, picks)
    if draw.full is not None:
        tokens[draw.rows] = torch.multinomial(draw.full, num_samples, *args, **kwargs)
    n_full = int(draw.rows.numel())
    draw.warper.candidate_draws += tokens.size(0) - n_full
    draw.warper.full_row_draws += n_full
    return tokens


def draw_next_tokens(scores, generator=None):
    """The next tokens ([batch]) the patched `_sample` draws for `scores`, the logits processors' output:
    among the candidates when `scores` is a fused warper's output (unchanged since), else over the whole row."""
    return _candidate_multinomial(_candidate_softmax(scores, dim=-1), 1, generator=generator).squeeze(1)


def sampling_probabilities(scores):
    """The distribution ([batch, vocab]) `draw_next_tokens` samples from, written out densely."""
    import torch

    probs = _candidate_softmax(scores, dim=-1)
    draw = getattr(probs, _DRAW, None)
    if draw is None:
        return probs
    dense = torch.zeros_like(scores).scatter_(1, draw.ids, probs)
    if draw.full is not None:
        dense[draw.rows] = draw.full
    return dense


class _Forward:
    """A module seen through a proxy: the names given are replaced, every other goes to `target`."""

    def __init__(self, target, **replaced):
        self._target = target
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(self._target, name)


@functools.cache
def _proxies():
    import torch
    from torch import nn

    return (_Forward(torch, multinomial=_candidate_multinomial),
            _Forward(nn, functional=_Forward(nn.functional, softmax=_candidate_softmax)))


def _draws_as_expected(sample) -> bool:
    """Does this `_sample` pick tokens with exactly the two statements the candidate draw replaces?"""
    if not isinstance(sample, types.FunctionType) or not {"nn", "torch"} <= set(sample.__code__.co_names):
        return False
    try:
        source = inspect.getsource(sample.__code__)  # the code object's own source, never a wrapped one's
    except (OSError, TypeError):
        return False
    return (source.count(_SAMPLE_SOFTMAX) == 1 and source.count(_SAMPLE_MULTINOMIAL) == 1
            and len(re.findall(r"\bprobs\b", source)) == 2)


def _with_candidate_draw(sample):
    """transformers' `_sample`, the same code object, with `torch` and `nn` resolved to the proxies."""
    namespace = dict(sample.__globals__)  # a fresh copy per call: later changes to the module are seen
    namespace["torch"], namespace["nn"] = _proxies()
    rebound = types.FunctionType(sample.__code__, namespace, sample.__name__, sample.__defaults__,
                                 sample.__closure__)
    rebound.__kwdefaults__ = sample.__kwdefaults__
    return rebound


def _draws_among_candidates(processors, generation_config, input_ids) -> bool:
    """Sampling on CPU with the fused warper as the last processor (nothing changes its scores after it)."""
    return (_state["candidate_draw"] and bool(getattr(generation_config, "do_sample", False))
            and input_ids is not None and input_ids.device.type == "cpu" and bool(processors)
            and type(processors[-1]) is TopKTopPLogitsWarper and processors[-1].filter_value == -float("inf"))


# --------------------------------------------------------------------------- installing


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


# candidate_draw: the last install's choice; available: whether transformers' `_sample` allows it
_state = {"candidate_draw": True, "available": False}


def candidate_draw_active() -> bool:
    """True when installed `generate` calls draw among the top-k/top-p candidates (see the module docstring)."""
    from transformers.generation.utils import GenerationMixin

    return bool(getattr(GenerationMixin._sample, _PATCH_FLAG, False) and _state["available"]
                and _state["candidate_draw"])


def install_fast_topk_topp(candidate_draw: bool | None = None) -> bool:
    """Patch transformers' GenerationMixin so CPU sampling uses the fused warper and draws among its
    candidates; True if newly installed.

    Idempotent. Only CPU generation is changed: on CUDA the full sort is cheap and Unsloth owns
    generate. candidate_draw=False keeps transformers' full-vocabulary draw (the fused warper only):
    the same tokens for a seed as transformers' own warpers and as releases before issue #40.
    None (what the kit's own calls pass) leaves the setting as it is; it starts True.
    """
    from transformers.generation.utils import GenerationMixin

    if candidate_draw is not None:
        _state["candidate_draw"] = bool(candidate_draw)
    installed = False
    original = GenerationMixin._get_logits_processor
    if not getattr(original, _PATCH_FLAG, False):
        def _get_logits_processor(self, generation_config, *args, **kwargs):
            processors = original(self, generation_config, *args, **kwargs)
            device = kwargs.get("device", getattr(self, "device", None))
            return fuse_topk_topp(processors) if _on_cpu(device) else processors

        setattr(_get_logits_processor, _PATCH_FLAG, True)
        _get_logits_processor.__wrapped__ = original
        GenerationMixin._get_logits_processor = _get_logits_processor
        installed = True

    original_sample = GenerationMixin._sample
    if not getattr(original_sample, _PATCH_FLAG, False):
        _state["available"] = _draws_as_expected(original_sample)
        if not _state["available"]:
            logger.warning("transformers' GenerationMixin._sample does not pick tokens as %s expects: CPU "
                           "sampling keeps transformers' full-vocabulary draw (exact, slower)", __name__)
        signature = inspect.signature(original_sample)

        @functools.wraps(original_sample)
        def _sample(self, *args, **kwargs):
            if _state["available"]:
                bound = signature.bind_partial(self, *args, **kwargs).arguments
                if _draws_among_candidates(bound.get("logits_processor"), bound.get("generation_config"),
                                           bound.get("input_ids")):
                    return _with_candidate_draw(original_sample)(self, *args, **kwargs)
            return original_sample(self, *args, **kwargs)

        setattr(_sample, _PATCH_FLAG, True)
        GenerationMixin._sample = _sample
        installed = True
    if installed:
        logger.info("CPU sampling: top-p applied inside the top-k candidates (no full-vocabulary sort)%s",
                    ", the token drawn among them" if candidate_draw_active() else "")
    return installed


def uninstall_fast_topk_topp() -> bool:
    """Restore transformers' own `_get_logits_processor` and `_sample`, and candidate_draw's default (True);
    True if a patch was removed."""
    from transformers.generation.utils import GenerationMixin

    _state["candidate_draw"] = True
    removed = False
    for name in ("_get_logits_processor", "_sample"):
        current = getattr(GenerationMixin, name)
        if getattr(current, _PATCH_FLAG, False):
            setattr(GenerationMixin, name, current.__wrapped__)
            removed = True
    return removed
