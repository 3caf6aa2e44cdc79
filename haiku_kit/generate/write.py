"""Generate with a model: sampling settings, batched seeded generation, and verified writing.

`generate` samples k completions per prompt, batched with left padding and reseeded per batch,
stopping at <end_of_turn>; `write_haiku` samples k poems about a topic and returns the best
valid one (or the closest, with its diagnosis).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haiku_kit.config import EvalSettings, ModelSettings, RunConfig
from haiku_kit.generate.constrained import constrained_generate
from haiku_kit.generate.sampling import install_fast_topk_topp
from haiku_kit.model.chat import encode, prompt_strings, stop_token_ids
from haiku_kit.model.load import load_from_config
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.judge import fluency_problems, is_original
from haiku_kit.verify.text import PATTERN, build_prompt

# A topic is a phrase or a sentence (the reference data's longest has 167 characters): a longer
# one only slows the model down (a 100,000-character topic ran for minutes).
MAX_TOPIC_CHARS = 500


@dataclass
class SamplingSettings:
    """Sampling for generate(); the defaults are the reference's (and Gemma 3's)."""

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    do_sample: bool = True

    @classmethod
    def greedy(cls) -> SamplingSettings:
        return cls(do_sample=False)

    @classmethod
    def of(cls, settings: EvalSettings) -> SamplingSettings:
        """The sampling part of a config's eval settings."""
        return cls(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)

    def generate_kwargs(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k}


@dataclass
class Generations:
    """Outputs of generate(): per prompt, k decoded texts, limit flags and new-token counts."""

    texts: list[list[str]]
    hit_limit: list[list[bool]]
    num_tokens: list[list[int]]
    max_new_tokens: int
    # The new tokens decoded with their special tokens, the stop token included (what the
    # reference's eval cut its answer from: evaluate/protocol.reference_answer); None where the
    # generation does not keep them (the constrained decoder).
    raw: list[list[str]] | None = None

    @property
    def hit_limit_share(self) -> float:
        flags = [f for row in self.hit_limit for f in row]
        return sum(flags) / len(flags) if flags else 0.0

    @property
    def k(self) -> int:
        return len(self.texts[0]) if self.texts else 0


def generate(
    model,
    tokenizer,
    prompts: Sequence[Any],
    k: int = 1,
    seed: int = 0,
    sampling: SamplingSettings | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    progress: bool = True,
    constrained: bool = False,
    candidates: int = 1,
    max_word_syllables: int = 0,
    free_words: Sequence[str] | None = None,
    clean_line_ends: bool = False,
) -> Generations:
    """k samples for each prompt, batched with left padding.

    constrained=True writes through the syllable-constrained decoder (constrained_generate):
    every line is steered onto its 5-7-5 target while it is written, dead ends are resampled a
    bounded number of times, and `check` stays the judge of what comes back. candidates > 1
    (constrained only) draws that many drafts per sample and keeps the most likely valid one;
    max_word_syllables > 0 (constrained only) allows no word with more syllables, except the
    words of free_words[i] in prompt i's poems (its topic, say). clean_line_ends (constrained
    only) lets no line end on an article, preposition or conjunction.

    Prompts are chat message lists (rendered with the chat template, add_generation_prompt) or
    plain strings used as already-formatted model input. Each batch reseeds torch with
    seed + batch number, so the same arguments give the same texts. Generation stops at any of
    the model's eos ids plus <end_of_turn>; a sample that never stopped "hit the limit".
    """
    import torch
    from tqdm.auto import tqdm

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if candidates != 1 and not constrained:
        raise ValueError(f"candidates={candidates} needs constrained=True (free samples are "
                         "not compared)")
    sampling = sampling or SamplingSettings()
    if max_word_syllables and not constrained:
        raise ValueError(f"max_word_syllables={max_word_syllables} needs constrained=True")
    if free_words is not None and not max_word_syllables:
        raise ValueError("free_words needs max_word_syllables > 0 (they are its exceptions)")
    if clean_line_ends and not constrained:
        raise ValueError("clean_line_ends needs constrained=True")
    if constrained:
        return _constrained(model, tokenizer, prompts, k, seed, sampling, batch_size,
                            max_new_tokens, candidates, max_word_syllables, free_words,
                            clean_line_ends)
    install_fast_topk_topp()  # CPU: top-p inside the top-k candidates, the token drawn among them
    texts = prompt_strings(tokenizer, prompts)
    items = [t for t in texts for _ in range(k)]  # k copies of each prompt, side by side
    stop = stop_token_ids(model, tokenizer)
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=max_new_tokens, eos_token_id=stop,
                  pad_token_id=tokenizer.pad_token_id, **sampling.generate_kwargs())

    decoded: list[str] = []
    raw: list[str] = []
    limit: list[bool] = []
    lengths: list[int] = []
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(items), desc="generate", unit="sample", disable=not progress)
        for b, start in enumerate(range(0, len(items), batch_size)):
            batch = items[start : start + batch_size]
            enc = encode(tokenizer, batch).to(model.device)
            torch.manual_seed(seed + b)
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=config)
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            for row in new:
                end = next((i for i, t in enumerate(row) if t in stop), None)
                limit.append(end is None)
                lengths.append(len(row) if end is None else end + 1)
                kept = row if end is None else row[:end]
                decoded.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
                raw.append(tokenizer.decode(row if end is None else row[: end + 1],
                                            skip_special_tokens=False))
            bar.update(len(batch))
        bar.close()
    finally:
        model.train(was_training)

    def regroup(values: list) -> list[list]:
        return [values[i * k : (i + 1) * k] for i in range(len(texts))]

    return Generations(regroup(decoded), regroup(limit), regroup(lengths), max_new_tokens,
                       regroup(raw))


def _constrained(model, tokenizer, prompts, k, seed, sampling, batch_size, max_new_tokens,
                 candidates, max_word_syllables, free_words, clean_line_ends):
    results = constrained_generate(model, tokenizer, prompts, k=k, seed=seed, sampling=sampling,
                                   batch_size=batch_size, max_new_tokens=max_new_tokens,
                                   candidates=candidates, max_word_syllables=max_word_syllables,
                                   free_words=free_words, clean_line_ends=clean_line_ends)
    return Generations([[r.completion for r in group] for group in results],
                       [[r.hit_limit for r in group] for group in results],
                       [[r.num_tokens for r in group] for group in results], max_new_tokens)


# --------------------------------------------------------------------------- verified writing


@dataclass
class WrittenHaiku:
    """write_haiku's answer: the chosen poem, its check and similarity, and all candidates."""

    topic: str
    poem: str
    is_haiku: bool
    similarity: float
    check: hk.HaikuCheck
    candidates: list[dict]
    problems: tuple[str, ...] = ()  # why the judge's rules read it as filler (empty: fluent)

    @property
    def reason(self) -> str:
        return self.check.reason

    def diagnosis(self) -> str:
        counts = ", ".join(
            "/".join(str(n) for n in sorted(c)) or "0" for c in self.check.counts[:6])
        if len(self.check.counts) > 6:
            counts += f", ... ({len(self.check.counts)} lines)"
        verdict = "valid 5-7-5 haiku" if self.is_haiku else f"not a haiku: {self.reason}"
        reads = ("reads as English" if not self.problems
                 else "reads as filler: " + "; ".join(self.problems))
        return f"syllables per line: {counts or '-'}\n{verdict}\n{reads}"


def pick_best(checks: Sequence[hk.HaikuCheck], similarities: Sequence[float],
              fluent: Sequence[bool] | None = None, original: Sequence[bool] | None = None) -> int:
    """Index of the best candidate: valid first, then (given `fluent`) those that read as
    English by the judge's rules, then (given `original`) those that copy neither the
    instruction nor the topic, then smallest distance, then most similar. So the pick is good
    by the judge's rules (valid, fluent, on topic, original) whenever one candidate is: among
    those left, the most similar is on topic if any is."""
    if not checks:
        raise ValueError("pick_best: no candidates")
    reads = fluent if fluent is not None else [True] * len(checks)
    own = original if original is not None else [True] * len(checks)
    return max(range(len(checks)), key=lambda i: (
        checks[i].is_haiku, reads[i], own[i], -checks[i].distance, similarities[i]))


@functools.lru_cache(maxsize=2)
def loaded_model(model: str, adapter: str | None):
    """(model, tokenizer) of a model name/path (+ adapter) with the default config, loaded
    through model.load.load_from_config once and kept for later calls."""
    return load_from_config(RunConfig(model=ModelSettings(name=model)), adapter, trainable=False)


def write_haiku(
    topic: str,
    model: Any = "embedded",
    tokenizer: Any = None,
    adapter: str | None = None,
    k: int = 8,
    seed: int = 0,
    sampling: SamplingSettings | None = None,
    max_new_tokens: int = 128,
    scorer: Any = None,
    progress: bool = False,
    constrained: bool = False,
) -> WrittenHaiku:
    """Sample k poems about `topic`; return the best: valid first, then one the judge's rules
    read as English (verify.judge.fluency_problems: no line cut off on "the", no stutter), then
    one that copies neither the instruction nor the topic (verify.judge.is_original), then the
    closest (smallest syllable distance), then the most similar, with its diagnosis.
    constrained=True writes through the syllable-constrained decoder with clean line ends.

    `model` is a loaded model (then pass its `tokenizer`) or a model name/path (see
    loaded_model).
    """
    if not isinstance(topic, str) or not topic.strip():
        raise ValueError("write_haiku: topic must be non-empty text")
    if len(topic) > MAX_TOPIC_CHARS or "\x00" in topic:
        raise ValueError(f"write_haiku: a topic of at most {MAX_TOPIC_CHARS} characters, no NUL "
                         f"(got {len(topic):,})")
    if isinstance(model, (str, Path)):
        model, tokenizer = loaded_model(str(model), None if adapter is None else str(adapter))
    elif tokenizer is None:
        raise ValueError("write_haiku: pass the tokenizer with a loaded model")
    gens = generate(model, tokenizer, [build_prompt(topic.strip())], k=k, seed=seed,
                    sampling=sampling, batch_size=k, max_new_tokens=max_new_tokens,
                    progress=progress, constrained=constrained, clean_line_ends=constrained)
    texts = gens.texts[0]
    poems = [hk.extract_poem(t).poem for t in texts]
    checks = [hk.check(p, PATTERN) for p in poems]
    if scorer is None:
        from haiku_kit.verify.similarity import get_scorer

        scorer = get_scorer()
    sims = [c - 0.5 for c in scorer.cosine([topic] * len(poems), poems)]
    problems = [fluency_problems(p) if p.strip() else ["no words"] for p in poems]
    original = [is_original(p, topic.strip()) for p in poems]
    candidates = [
        {"completion": t, "poem": p, "is_haiku": c.is_haiku, "distance": c.distance,
         "similarity": s, "reason": c.reason, "hit_limit": h, "fluency_problems": f,
         "original": o}
        for t, p, c, s, h, f, o in zip(texts, poems, checks, sims, gens.hit_limit[0], problems,
                                       original)
    ]
    best = pick_best(checks, sims, [not f for f in problems], original)
    return WrittenHaiku(topic, poems[best], checks[best].is_haiku, sims[best], checks[best],
                        candidates, tuple(problems[best]))
