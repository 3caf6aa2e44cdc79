"""Generate poems that are valid by construction: the syllable processor, then check as judge.

`constrained_generate` samples with `constrained.SyllableLogitsProcessor` and judges every answer
with `haiku.check` on the poem `haiku.extract_poem` finds (what evaluation scores). A sample that
hit a dead end (no candidate fits, or the token limit) or that check rejects is resampled from
its last good line, a bounded number of times; then the closest poem comes back with check's
diagnosis. `is_valid` is always check's verdict, never the processor's.

With candidates > 1 each poem is drawn that many times and the draft kept is, among the valid
ones, the one the model finds most likely (mean log-prob per token, likelihood.py, its end
token included): the draft the constraint bent least, e.g. not one whose last line stops
mid-phrase.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from haiku_kit import haiku as hk
from haiku_kit.chat_format import encode, prompt_strings, stop_token_ids, text_tokenizer
from haiku_kit.constrained import (
    LineState,
    PoemTracker,
    SyllableLogitsProcessor,
    token_table,
    word_prefixes,
)
from haiku_kit.likelihood import mean_logprobs

__all__ = ["ConstrainedResult", "constrained_generate"]

DEFAULT_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 64}


@dataclass
class ConstrainedResult:
    """One constrained answer: the poem, check's verdict on it and how it was reached."""

    text: str  # the poem (extract_poem of the completion)
    completion: str  # the answer as generated: kept lines plus the last sample
    is_valid: bool  # check(text, pattern, strict).is_haiku
    check: hk.HaikuCheck
    tries: int  # samples drawn for this answer (1 = first try)
    dead_ends: int = 0  # tries that ended with no allowed token or at the token limit
    num_tokens: int = 0  # new tokens generated over all tries
    hit_limit: bool = False  # the returned sample never produced an end token
    end_text: str = ""  # the end token the sample stopped with, as text ("" at the limit)
    logprob: float | None = None  # mean log-prob per token, when drafts were compared
    drafts: int = 1  # drafts this poem was chosen from

    @property
    def reason(self) -> str:
        return self.check.reason


@dataclass
class _Job:
    prompt: str
    free: frozenset[str] = frozenset()
    kept: list[str] = field(default_factory=list)
    tries: int = 0
    dead_ends: int = 0
    failed_depth: int = -1  # lines kept when the previous try failed
    tokens: int = 0
    best: ConstrainedResult | None = None


def _sampling_kwargs(sampling: Any) -> dict[str, Any]:
    if sampling is None:
        return dict(DEFAULT_SAMPLING)
    if hasattr(sampling, "generate_kwargs"):
        return dict(sampling.generate_kwargs())
    return {**DEFAULT_SAMPLING, **dict(sampling)}


def _judge(completion: str, pattern: tuple[int, ...], strict: bool) -> tuple[str, hk.HaikuCheck]:
    poem = hk.extract_poem(completion).poem
    return poem, hk.check(poem, pattern, strict=strict)


def _better(new: ConstrainedResult, old: ConstrainedResult | None) -> bool:
    return old is None or (new.is_valid, -new.check.distance) > (old.is_valid, -old.check.distance)


def _replay(tracker: PoemTracker, kept: list[str], tokens: list[int], stop: set[int]):
    """The tracker's state after the sampled tokens, and the tokens up to the end token."""
    state: LineState = tracker.start(kept)
    for n, token in enumerate(tokens):
        tracker.advance(state, token)
        if token in stop:
            return state, tokens[:n], False
    return state, tokens, True


def _next_kept(job: _Job, state: LineState, finished_clean: bool) -> list[str]:
    """Lines to keep for the next try: the good lines before the one that failed, one fewer
    when a try already failed at that line, none when a complete poem was rejected."""
    if finished_clean:
        return []
    kept = list(state.lines)
    if kept and len(kept) <= job.failed_depth:
        kept = kept[:-1]
    return kept


def constrained_generate(
    model,
    tokenizer,
    prompts: Sequence[Any],
    pattern: Sequence[int] = (5, 7, 5),
    strict: bool = False,
    k: int = 1,
    seed: int = 0,
    sampling: Any = None,
    max_new_tokens: int = 64,
    retries: int = 8,  # a failing line is resampled alone; 4 left 1.6% of base-model poems invalid
    batch_size: int = 8,
    top_candidates: int = 64,
    candidates: int = 1,
    max_word_syllables: int = 0,
    free_words: Sequence[str] | None = None,
    clean_line_ends: bool = False,
) -> list[list[ConstrainedResult]]:
    """k constrained poems per prompt (chat message lists or formatted strings, as generate).

    sampling: a SamplingSettings, a dict of generate kwargs, or None (T=1, top-p 0.95, top-k 64).
    Each try reseeds torch (seed, round, batch), so the same arguments give the same poems.
    Retries always sample (a greedy retry would repeat the failure).
    candidates: drafts per poem; the valid draft with the highest mean log-prob is kept (when
    none is valid, the closest, then the most likely).
    max_word_syllables > 0: no word may need more syllables (1: one-syllable words only).
    free_words[i]: text whose words prompt i may use whatever their length (its topic).
    clean_line_ends: no line may end on an article, preposition or conjunction ("the", "of").
    """
    pattern = tuple(int(n) for n in pattern)
    if min(k, batch_size, max_new_tokens, candidates) < 1 or retries < 0:
        raise ValueError("k, batch_size, max_new_tokens and candidates must be >= 1, retries >= 0")
    texts = prompt_strings(tokenizer, prompts)
    if free_words is not None and len(free_words) != len(texts):
        raise ValueError(f"free_words has {len(free_words)} entries for {len(texts)} prompts")
    free = [word_prefixes(w) for w in free_words] if free_words else [frozenset()] * len(texts)
    stop = stop_token_ids(model, tokenizer)
    tracker = PoemTracker(token_table(tokenizer), pattern, strict, end_ids=stop,
                          max_word_syllables=max_word_syllables, clean_line_ends=clean_line_ends)
    first = copy.deepcopy(model.generation_config)
    first.update(max_new_tokens=max_new_tokens, eos_token_id=stop,
                 pad_token_id=tokenizer.pad_token_id, **_sampling_kwargs(sampling))
    again = copy.deepcopy(first)
    if not again.do_sample:
        again.update(**DEFAULT_SAMPLING)
    jobs = [_Job(t, f) for t, f in zip(texts, free) for _ in range(k * candidates)]
    pending = list(range(len(jobs)))
    was_training = model.training
    model.eval()
    try:
        for round_no in range(retries + 1):
            if not pending:
                break
            failed: list[int] = []
            for b, start in enumerate(range(0, len(pending), batch_size)):
                batch = pending[start : start + batch_size]
                config = first if round_no == 0 else again
                processor = SyllableLogitsProcessor(
                    tracker, top_candidates=max(top_candidates, int(config.top_k or 0)),
                    start_lines=[jobs[i].kept for i in batch], free=[jobs[i].free for i in batch])
                failed += _run_batch(model, tokenizer, processor, [jobs[i] for i in batch],
                                     batch, config, set(stop), seed + 100_003 * round_no + b,
                                     round_no == retries)
            pending = failed
    finally:
        model.train(was_training)
    results: list[ConstrainedResult] = [job.best for job in jobs]  # type: ignore[misc]
    if candidates > 1:
        results = _most_likely(model, tokenizer, jobs, results, candidates, batch_size)
    return [results[i * k : (i + 1) * k] for i in range(len(texts))]


def _most_likely(model, tokenizer, jobs, results, candidates, batch_size):
    """One result per run of `candidates` drafts: valid first, then closest, then most likely."""
    scores = mean_logprobs(model, tokenizer, [job.prompt for job in jobs],
                           [r.completion + r.end_text for r in results], batch_size=batch_size)
    chosen = []
    for start in range(0, len(results), candidates):
        group = range(start, start + candidates)
        for i in group:
            results[i].logprob, results[i].drafts = scores[i], candidates
        best = max(group, key=lambda i: (results[i].is_valid, -results[i].check.distance,
                                         scores[i]))
        chosen.append(results[best])
    return chosen


def _run_batch(model, tokenizer, processor, jobs, ids, config, stop, seed, last_round):
    """One generate call over jobs; returns the ids of the jobs to try again."""
    import torch
    from transformers import LogitsProcessorList

    tracker = processor.tracker
    inputs = [job.prompt + "".join(line + "\n" for line in job.kept) for job in jobs]
    enc = encode(tokenizer, inputs).to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=config,
                             logits_processor=LogitsProcessorList([processor]))
    again = []
    for job, job_id, row in zip(jobs, ids, out[:, enc["input_ids"].shape[1] :].tolist()):
        state, tokens, hit_limit = _replay(tracker, job.kept, row, stop)
        job.tries += 1
        job.tokens += len(tokens) + (not hit_limit)
        dead = state.dead or hit_limit or not state.finished
        job.dead_ends += dead
        prefix = "".join(line + "\n" for line in job.kept)
        completion = prefix + tokenizer.decode(tokens, skip_special_tokens=True)
        poem, verdict = _judge(completion, tracker.pattern, tracker.strict)
        end_text = "" if hit_limit else text_tokenizer(tokenizer).convert_ids_to_tokens(
            row[len(tokens)])
        result = ConstrainedResult(poem, completion.strip(), verdict.is_haiku, verdict, job.tries,
                                   job.dead_ends, job.tokens, hit_limit, end_text=end_text)
        if _better(result, job.best):
            job.best = result
        job.best.tries, job.best.dead_ends, job.best.num_tokens = (
            job.tries, job.dead_ends, job.tokens)
        if verdict.is_haiku or last_round:
            continue
        job.kept = _next_kept(job, state, finished_clean=not dead)
        job.failed_depth = len(state.lines)
        again.append(job_id)
    return again
