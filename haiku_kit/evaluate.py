"""Generate poems, score them with the reference's metrics (plus CIs and diagnostics), and write
verified haiku.

The reference run (axeld5/gemma_haiku, full_eval.py) drew one unseeded sample per prompt with
max_new_tokens=50 (which cut answers short) and printed point estimates. Here generation is
batched and seeded, the token limit is generous and its hit rate is reported, k samples per
prompt are supported (pass@k), and every rate has a 95% bootstrap confidence interval.

Metric definitions (per output; rates are means over all outputs):
- haiku:         the kit's verifier (haiku.check) on the poem haiku.extract_poem finds (or on the
                 raw output when that is itself a haiku). The main figure.
- pyphen_haiku:  the reference's own counter on the raw output: lines = non-blank lines split on
                 "\\n", exactly 3 lines with pyphen counts 5/7/5, where a word's count is its
                 number of hyphenation pieces. For comparison with the reference's table.
- similarity:    cos(MiniLM(topic), MiniLM(raw output)) - 0.5 (the reference's definition).
- total:         haiku + similarity; pyphen_total = pyphen_haiku + similarity (reference Total).
- train_overlap: raw output, stripped, equal to a stripped training answer (reference).
- train_near:    the extracted poem, normalised (case, punctuation, spaces), equal to or at
                 least NEAR_DUPLICATE_RATIO similar (difflib) to a normalised training answer.
- prompt_copy:   at least COPY_THRESHOLD of the poem's word trigrams copied from the prompt's
                 instruction (rewards.copy_fraction: topic words do not count as copying).
- preamble:      extract_poem had to strip a preamble ("Here's a haiku...").
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from haiku_kit import haiku as hk
from haiku_kit.errors import DataError, HaikuKitError
from haiku_kit.modeling import stop_token_ids
from haiku_kit.rewards import copy_fraction, prompt_text

PATTERN = (5, 7, 5)
NEAR_DUPLICATE_RATIO = 0.9
COPY_THRESHOLD = 0.5
N_BOOT = 1000
# The reference called pyphen.Pyphen(lang="en"), which pyphen resolves to its en_GB dictionary:
# with it all 1,774 haiku of the reference's pyphen-filtered train_haiku.csv pass, with en_US
# only 1,414 do. "en" therefore reproduces the reference's counter.
PYPHEN_LANG = "en"

RATE_METRICS = (
    "haiku", "haiku_raw", "pyphen_haiku", "three_lines", "train_overlap", "train_near",
    "prompt_copy", "preamble", "extracted", "empty", "hit_limit",
)
MEAN_METRICS = ("similarity", "total", "pyphen_total", "distance", "copy_fraction", "words",
                "tokens")
FIELD_OF = {"haiku": "is_haiku", "haiku_raw": "is_haiku_raw"}  # metric -> record field


# --------------------------------------------------------------------------- generation


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

    @property
    def hit_limit_share(self) -> float:
        flags = [f for row in self.hit_limit for f in row]
        return sum(flags) / len(flags) if flags else 0.0

    @property
    def k(self) -> int:
        return len(self.texts[0]) if self.texts else 0


def _prompt_strings(tokenizer, prompts: Sequence[Any]) -> list[str]:
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            out.append(prompt)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
            out.append(tokenizer.apply_chat_template(
                list(prompt), tokenize=False, add_generation_prompt=True))
        else:
            raise DataError(f"prompt {i}: expected a string or a list of chat messages, "
                            f"got {type(prompt).__name__}")
    return out


def encode(tokenizer, texts: list[str]):
    """Left-padded batch encoding with exactly one <bos> per prompt: chat templates already
    write it, plain strings get the tokenizer's usual special tokens."""
    bos = tokenizer.bos_token
    adds_bos = bool(bos) and tokenizer("").input_ids[:1] == [tokenizer.bos_token_id]
    if adds_bos:
        texts = [t.removeprefix(bos) for t in texts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=adds_bos)
    finally:
        tokenizer.padding_side = old_side


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
) -> Generations:
    """k samples for each prompt, batched with left padding.

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
    sampling = sampling or SamplingSettings()
    texts = _prompt_strings(tokenizer, prompts)
    items = [t for t in texts for _ in range(k)]  # k copies of each prompt, side by side
    stop = stop_token_ids(model, tokenizer)
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=max_new_tokens, eos_token_id=stop,
                  pad_token_id=tokenizer.pad_token_id, **sampling.generate_kwargs())

    decoded: list[str] = []
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
            bar.update(len(batch))
        bar.close()
    finally:
        model.train(was_training)

    def regroup(values: list) -> list[list]:
        return [values[i * k : (i + 1) * k] for i in range(len(texts))]

    return Generations(regroup(decoded), regroup(limit), regroup(lengths), max_new_tokens)


# --------------------------------------------------------------------------- metric pieces


@functools.lru_cache(maxsize=1)
def _pyphen():
    import pyphen

    return pyphen.Pyphen(lang=PYPHEN_LANG)


def pyphen_counts(text: str) -> list[int]:
    """The reference's per-line syllable counts: non-blank lines split on newlines; a word
    counts as its number of pyphen hyphenation pieces (hyphens already in the word count too)."""
    dic = _pyphen()
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    return [sum(dic.inserted(w).count("-") + 1 for w in line.split()) for line in lines]


def pyphen_is_haiku(text: str, pattern: Sequence[int] = PATTERN) -> bool:
    """The reference's is_haiku: exactly len(pattern) lines whose pyphen counts equal it."""
    return pyphen_counts(text) == list(pattern)


def normalize_text(text: str) -> str:
    """Lowercase, letters/digits/apostrophes only, single spaces: for near-duplicate checks."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


class TrainIndex:
    """Training answers, for the exact (reference) and near-duplicate overlap checks."""

    def __init__(self, answers: Sequence[str] = ()):
        self.exact = {str(a).strip() for a in answers}
        self.normalized = sorted({normalize_text(str(a)) for a in answers} - {""})
        self._normalized_set = set(self.normalized)

    def __len__(self) -> int:
        return len(self.exact)

    def is_exact(self, text: str) -> bool:
        return text.strip() in self.exact

    def is_near(self, text: str, ratio: float = NEAR_DUPLICATE_RATIO) -> bool:
        norm = normalize_text(text)
        if not norm:
            return False
        if norm in self._normalized_set:
            return True
        return bool(difflib.get_close_matches(norm, self.normalized, n=1, cutoff=ratio))


def bootstrap_ci(
    values: Sequence[float],
    groups: Sequence[int] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values`.

    With `groups` (prompt index per value) whole prompts are resampled, so k samples of one
    prompt are not counted as k independent observations.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    g = np.arange(x.size) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    sums = np.bincount(g, weights=x)
    counts = np.bincount(g).astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(n_boot, sums.size))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, Codex): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# --------------------------------------------------------------------------- EvalResult


@dataclass
class EvalResult:
    """Scores of one model's outputs: per-output records plus aggregate metrics.

    metrics: point estimates; ci: 95% bootstrap interval per metric; distributions:
    line-count and per-line syllable-error histograms; pass_at_k: {k: rate} for valid haiku.
    """

    records: list[dict]
    metrics: dict[str, float]
    ci: dict[str, list[float]]
    distributions: dict[str, Any]
    pass_at_k: dict[int, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def haiku_score(self) -> float:
        return self.metrics["haiku"]

    @property
    def similarity_score(self) -> float:
        return self.metrics["similarity"]

    @property
    def total_score(self) -> float:
        return self.metrics["total"]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the records (those go to generations.jsonl)."""
        return {"meta": self.meta, "metrics": self.metrics, "ci": self.ci,
                "distributions": self.distributions,
                "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()}}

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "generations.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(_no_nan(r), ensure_ascii=False) + "\n" for r in self.records)
        (out / "result.json").write_text(
            json.dumps(_no_nan(self.to_dict()), indent=2, ensure_ascii=False))
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> EvalResult:
        out = Path(out_dir)
        for name in ("result.json", "generations.jsonl"):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out / name}: not an evaluation folder (no {name})")
        data = json.loads((out / "result.json").read_text())
        with open(out / "generations.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        for r in records:
            for key in ("cosine", "similarity", "total", "pyphen_total"):
                r[key] = math.nan if r.get(key) is None else r[key]
        metrics = {k: math.nan if v is None else v for k, v in data["metrics"].items()}
        ci = {k: [math.nan if v is None else v for v in pair] for k, pair in data["ci"].items()}
        return cls(records, metrics, ci, data["distributions"],
                   {int(k): v for k, v in data.get("pass_at_k", {}).items()}, data.get("meta", {}))


def _no_nan(value: Any) -> Any:
    """NaN -> None, so the files are strict JSON (similarity is NaN when it was skipped)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


# --------------------------------------------------------------------------- evaluate


def _as_groups(completions: Any) -> list[list[str]]:
    if isinstance(completions, Generations):
        return completions.texts
    groups = []
    for i, c in enumerate(completions):
        if isinstance(c, str):
            groups.append([c])
        elif isinstance(c, (list, tuple)) and all(isinstance(s, str) for s in c) and c:
            groups.append(list(c))
        else:
            raise DataError(f"completion {i}: expected text or a non-empty list of texts, "
                            f"got {type(c).__name__}")
    return groups


def _score_record(text: str, topic: str, prompt: str, train: TrainIndex) -> dict[str, Any]:
    extraction = hk.extract_poem(text)
    result = hk.check(extraction.poem, PATTERN)
    raw = hk.check(text, PATTERN)
    if raw.is_haiku and not result.is_haiku:
        # Extraction heuristics can mistake a poem's own first or last line for a preamble or
        # sign-off ("of course my parents / ..."): a raw output that is a haiku counts as one.
        extraction, result = hk.Extraction(text.strip()), raw
    copied = copy_fraction(extraction.poem, prompt, topic) if prompt else 0.0
    return {
        "topic": topic,
        "completion": text,
        "poem": extraction.poem,
        "stripped": list(extraction.stripped),
        "is_haiku": result.is_haiku,
        "is_haiku_raw": raw.is_haiku,
        "lines": len(result.lines),
        "three_lines": len(result.lines) == len(PATTERN),
        "counts": [sorted(c) for c in result.counts],
        "line_errors": list(result.line_errors),
        "distance": result.distance,
        "reason": result.reason,
        "pyphen_counts": pyphen_counts(text),
        "pyphen_haiku": pyphen_is_haiku(text),
        "train_overlap": train.is_exact(text),
        "train_near": train.is_near(extraction.poem) or train.is_exact(text),
        "copy_fraction": copied,
        "prompt_copy": copied >= COPY_THRESHOLD,
        "preamble": "preamble" in extraction.stripped,
        "extracted": not extraction.clean,
        "empty": not extraction.poem.strip(),
        "words": len(text.split()),
    }


def evaluate(
    completions: Generations | Sequence[str] | Sequence[Sequence[str]],
    topics: Sequence[str],
    prompts: Sequence[Any] | None = None,
    train_answers: Sequence[str] | TrainIndex = (),
    *,
    hit_limit: Sequence[Sequence[bool]] | None = None,
    num_tokens: Sequence[Sequence[int]] | None = None,
    scorer: Any = None,
    similarity: bool = True,
    n_boot: int = N_BOOT,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> EvalResult:
    """Score outputs (one text or k texts per topic) with the metrics in the module docstring.

    prompts: the prompts the outputs answer (chat messages or text), for the prompt-copy
    measure; None: no copy check. scorer: anything with .cosine(topics, texts) (default: the
    shared MiniLM scorer); similarity=False skips similarity (its metrics become NaN).
    """
    groups = _as_groups(completions)
    if isinstance(completions, Generations):
        hit_limit = completions.hit_limit if hit_limit is None else hit_limit
        num_tokens = completions.num_tokens if num_tokens is None else num_tokens
    topics = [str(t) for t in topics]
    if len(topics) != len(groups):
        raise DataError(f"got {len(groups)} completions/groups for {len(topics)} topics")
    if prompts is not None and len(prompts) != len(groups):
        raise DataError(f"got {len(prompts)} prompts for {len(groups)} completions/groups")
    train = train_answers if isinstance(train_answers, TrainIndex) else TrainIndex(train_answers)

    records = []
    for i, (topic, texts) in enumerate(zip(topics, groups)):
        prompt = prompt_text(prompts[i]) if prompts is not None else ""
        for j, text in enumerate(texts):
            record = {"prompt_index": i, "sample": j}
            record.update(_score_record(str(text), topic, prompt, train))
            record["hit_limit"] = bool(hit_limit[i][j]) if hit_limit is not None else False
            record["tokens"] = int(num_tokens[i][j]) if num_tokens is not None else None
            records.append(record)

    if similarity and records:
        if scorer is None:
            from haiku_kit.similarity import get_scorer

            scorer = get_scorer()
        cos = scorer.cosine([r["topic"] for r in records], [r["completion"] for r in records])
    else:
        cos = [math.nan] * len(records)
    for r, c in zip(records, cos):
        r["cosine"] = float(c)
        r["similarity"] = float(c) - 0.5
        r["total"] = float(r["is_haiku"]) + r["similarity"]
        r["pyphen_total"] = float(r["pyphen_haiku"]) + r["similarity"]

    info = dict(meta or {})
    info.update(n=len(records), n_prompts=len(groups),
                k=max((len(g) for g in groups), default=0), train_answers=len(train),
                pattern=list(PATTERN), n_boot=n_boot, seed=seed)
    return summarize(records, info, n_boot=n_boot, seed=seed)


def summarize(records: list[dict], meta: dict[str, Any], n_boot: int = N_BOOT,
              seed: int = 0) -> EvalResult:
    """Aggregate metrics, CIs, histograms and pass@k from scored records."""
    groups = [r["prompt_index"] for r in records]
    metrics: dict[str, float] = {}
    ci: dict[str, list[float]] = {}
    for name in RATE_METRICS + MEAN_METRICS:
        values = [r.get(FIELD_OF.get(name, name)) for r in records]
        if any(v is None for v in values):
            continue
        x = np.asarray(values, dtype=float)
        if x.size == 0 or np.isnan(x).any():
            metrics[name] = math.nan
            ci[name] = [math.nan, math.nan]
            continue
        metrics[name] = float(x.mean())
        ci[name] = list(bootstrap_ci(x, groups, n_boot=n_boot, seed=seed))
    line_errors: dict[str, dict[str, int]] = {}
    for i in range(len(PATTERN)):
        hist = Counter(r["line_errors"][i] for r in records
                       if r["lines"] == len(PATTERN) and len(r["line_errors"]) > i)
        line_errors[f"line{i + 1}"] = {str(e): n for e, n in sorted(hist.items())}
    distributions = {
        "line_counts": {str(n): c for n, c in sorted(Counter(r["lines"] for r in records).items())},
        "line_errors": line_errors,
    }
    return EvalResult(records, metrics, ci, distributions, _pass_at_k(records), meta)


def _per_prompt(records: list[dict], key: str = "is_haiku") -> list[tuple[int, int]]:
    """(samples, successes) per prompt."""
    n: Counter = Counter()
    c: Counter = Counter()
    for r in records:
        n[r["prompt_index"]] += 1
        c[r["prompt_index"]] += bool(r[key])
    return [(n[p], c[p]) for p in sorted(n)]


def _pass_at_k(records: list[dict]) -> dict[int, float]:
    counts = _per_prompt(records)
    if not counts:
        return {}
    n_min = min(n for n, _ in counts)
    ks = sorted({2**i for i in range(n_min.bit_length()) if 2**i <= n_min} | {n_min})
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}


def best_of_k_rate(result: EvalResult | list[dict], k: int) -> float:
    """Share of prompts with a valid haiku among k samples (unbiased pass@k on the samples).

    This is the valid rate of write_haiku(k=...) on the same prompts: it returns a valid poem
    exactly when one of its k candidates is valid. Needs >= k samples per prompt.
    """
    records = result.records if isinstance(result, EvalResult) else result
    counts = _per_prompt(records)
    if not counts:
        raise ValueError("best_of_k_rate: no records")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def _rows_of(dataset: Any) -> list[dict]:
    if hasattr(dataset, "to_list"):
        return dataset.to_list()
    return [dict(r) for r in dataset]


def evaluate_references(dataset: Any, train_answers: Sequence[str] = (), **kwargs) -> EvalResult:
    """Score a dataset's reference answers (its `haiku` column) as if a model wrote them.

    The upper bound for a model, and a check on the evaluator: references that pass the data
    filter should score Haiku 1.0.
    """
    rows = _rows_of(dataset)
    for i, row in enumerate(rows):
        for col in ("topic", "haiku"):
            if not isinstance(row.get(col), str):
                raise DataError(f"row {i}: needs a text '{col}' column to evaluate references")
    prompts = [r["prompt"] for r in rows] if rows and all(r.get("prompt") for r in rows) else None
    kwargs.setdefault("meta", {"model": "references"})
    return evaluate([r["haiku"] for r in rows], [r["topic"] for r in rows], prompts,
                    train_answers, **kwargs)


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

    @property
    def reason(self) -> str:
        return self.check.reason

    def diagnosis(self) -> str:
        counts = ", ".join(
            "/".join(str(n) for n in sorted(c)) or "0" for c in self.check.counts[:6])
        if len(self.check.counts) > 6:
            counts += f", ... ({len(self.check.counts)} lines)"
        verdict = "valid 5-7-5 haiku" if self.is_haiku else f"not a haiku: {self.reason}"
        return f"syllables per line: {counts or '-'}\n{verdict}"


def pick_best(checks: Sequence[hk.HaikuCheck], similarities: Sequence[float]) -> int:
    """Index of the best candidate: valid first, then smallest distance, then most similar."""
    if not checks:
        raise ValueError("pick_best: no candidates")
    return max(range(len(checks)),
               key=lambda i: (checks[i].is_haiku, -checks[i].distance, similarities[i]))


@functools.lru_cache(maxsize=2)
def _load(model: str, adapter: str | None):
    from haiku_kit.modeling import load_model

    return load_model(model, lora=None, adapter=adapter)


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
) -> WrittenHaiku:
    """Sample k poems about `topic`; return the best valid one by similarity, else the closest
    (smallest syllable distance, then similarity) with its diagnosis.

    `model` is a loaded model (then pass its `tokenizer`) or a model name/path, loaded with
    modeling.load_model(model, lora=None, adapter=adapter) and kept for later calls.
    """
    from haiku_kit.data import build_prompt

    if not isinstance(topic, str) or not topic.strip():
        raise ValueError("write_haiku: topic must be non-empty text")
    if isinstance(model, (str, Path)):
        model, tokenizer = _load(str(model), None if adapter is None else str(adapter))
    elif tokenizer is None:
        raise ValueError("write_haiku: pass the tokenizer with a loaded model")
    gens = generate(model, tokenizer, [build_prompt(topic.strip())], k=k, seed=seed,
                    sampling=sampling, batch_size=k, max_new_tokens=max_new_tokens,
                    progress=progress)
    texts = gens.texts[0]
    poems = [hk.extract_poem(t).poem for t in texts]
    checks = [hk.check(p, PATTERN) for p in poems]
    if scorer is None:
        from haiku_kit.similarity import get_scorer

        scorer = get_scorer()
    sims = [c - 0.5 for c in scorer.cosine([topic] * len(poems), poems)]
    candidates = [
        {"completion": t, "poem": p, "is_haiku": c.is_haiku, "distance": c.distance,
         "similarity": s, "reason": c.reason, "hit_limit": h}
        for t, p, c, s, h in zip(texts, poems, checks, sims, gens.hit_limit[0])
    ]
    best = pick_best(checks, sims)
    return WrittenHaiku(topic, poems[best], checks[best].is_haiku, sims[best], checks[best],
                        candidates)


# --------------------------------------------------------------------------- CLI


def cli_write(args: argparse.Namespace) -> int:
    """`haiku-kit write TOPIC`: the poem, its per-line counts and the verdict. 0 = valid."""
    try:
        result = write_haiku(args.topic, model=args.model, adapter=args.adapter, k=args.k,
                             seed=args.seed,
                             max_new_tokens=getattr(args, "max_new_tokens", 128))
    except (HaikuKitError, ValueError, OSError) as exc:
        print(f"haiku-kit write: {exc}", file=sys.stderr)
        return 2
    print(result.poem)
    print()
    print(result.diagnosis())
    print(f"similarity to topic: {result.similarity:+.3f} (cos - 0.5); best of {args.k}")
    return 0 if result.is_haiku else 1


def cli_eval(args: argparse.Namespace) -> int:
    """`haiku-kit eval`: generate on the eval prompts, score, write JSONL + table + plots."""
    from haiku_kit.report import write_report

    name = getattr(args, "name", None) or Path(args.adapter or args.model).name or "model"
    out = Path(args.out)
    sampling = SamplingSettings.greedy() if getattr(args, "greedy", False) else None
    try:
        rows, train = load_eval_data(args.data, getattr(args, "train", None))
        if args.n is not None:
            rows = rows[: args.n]
        if not rows:
            raise DataError(f"--data {args.data}: no eval prompts")
        result = run_eval(args.model, rows, adapter=args.adapter, train_answers=train,
                          k=args.k, seed=args.seed, name=name, sampling=sampling,
                          max_new_tokens=getattr(args, "max_new_tokens", 128),
                          batch_size=getattr(args, "batch_size", 8))
    except (HaikuKitError, ValueError, OSError) as exc:
        print(f"haiku-kit eval: {exc}", file=sys.stderr)
        return 2
    result.save(out)
    report = write_report({name: result}, out)
    print(f"wrote {out / 'generations.jsonl'}, {out / 'result.json'} and {report}")
    print((out / "table.md").read_text())
    return 0


def run_eval(
    model: Any,
    rows: list[dict],
    tokenizer: Any = None,
    adapter: str | None = None,
    train_answers: Sequence[str] = (),
    k: int = 1,
    seed: int = 0,
    sampling: SamplingSettings | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    name: str | None = None,
) -> EvalResult:
    """generate + evaluate on rows with `topic` and `prompt` columns; model as in write_haiku."""
    if isinstance(model, (str, Path)):
        model_name = str(model)
        model, tokenizer = _load(model_name, None if adapter is None else str(adapter))
    else:
        model_name = type(model).__name__
    sampling = sampling or SamplingSettings()
    prompts = [r["prompt"] for r in rows]
    gens = generate(model, tokenizer, prompts, k=k, seed=seed, sampling=sampling,
                    batch_size=batch_size, max_new_tokens=max_new_tokens)
    meta = {"name": name or model_name, "model": model_name, "adapter": adapter,
            "sampling": asdict(sampling), "max_new_tokens": max_new_tokens,
            "hit_limit_share": gens.hit_limit_share}
    return evaluate(gens, [r["topic"] for r in rows], prompts, train_answers, seed=seed,
                    meta=meta)


def load_eval_data(spec: str | None, train: str | None = None) -> tuple[list[dict], list[str]]:
    """Eval rows ({topic, prompt, haiku?}) and training answers from --data / --train.

    spec: a splits folder (its eval split; training answers from its sft and rl splits), a
    .jsonl/.csv with a topic column, or the reference's chat .json ({"conversations": [...]},
    prompts used verbatim). None: the bundled dataset's eval split, built in memory.
    """
    from haiku_kit import data

    answers: list[str] = []
    path = None if spec is None else Path(spec)
    if path is None or path.is_dir():
        # None: the bundled dataset, split in memory exactly as `haiku-kit data build` would.
        splits = data.build_splits(data.load_embedded(), None) if path is None \
            else data.load_splits(path)
        if "eval" not in splits:
            raise DataError(f"{path}: the splits folder has no 'eval' split")
        rows = _rows_of(splits["eval"])
        for name in ("sft", "rl"):
            if name in splits:
                answers += list(splits[name]["haiku"])
    elif not path.is_file():
        raise FileNotFoundError(f"--data {spec}: no such file or folder")
    elif data.is_chat_file(path):
        rows = _chat_rows(path)
    else:
        rows = _table_rows(path)
    for row in rows:
        if not row.get("prompt"):
            row["prompt"] = data.build_prompt(row["topic"])
    if train:
        answers += _answers_from(Path(train))
    return rows, answers


def _chat_messages(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [item.get("conversations", item.get("messages")) if isinstance(item, dict) else None
            for item in (items if isinstance(items, list) else [items])]


def _chat_rows(path: Path) -> list[dict]:
    """Rows of a chat file with the user turn kept verbatim as the prompt (as the reference)."""
    from haiku_kit.data import topic_from_prompt

    rows = []
    for i, turns in enumerate(_chat_messages(path)):
        turns = turns if isinstance(turns, list) else []
        user = next((m.get("content") for m in turns
                     if isinstance(m, dict) and m.get("role") == "user"), None)
        if not isinstance(user, str):
            raise DataError(f"{path}: row {i}: no text user turn in 'conversations'")
        answer = next((m.get("content") for m in turns
                       if isinstance(m, dict) and m.get("role") == "assistant"), None)
        rows.append({"topic": topic_from_prompt(user),
                     "prompt": [{"role": "user", "content": user}],
                     "haiku": answer, "source_id": f"{path.name}:{i}"})
    return rows


def _table_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {i + 1} is not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("topic"), str):
                raise DataError(f"{path}: line {i + 1} has no text 'topic' field")
            rows.append(row)
        return rows
    from haiku_kit import data

    return data.load_table(path)


def _answers_from(path: Path) -> list[str]:
    """Training answers (raw text, for the exact-match overlap) from --train."""
    from haiku_kit.data import is_chat_file

    if not path.exists():
        raise FileNotFoundError(f"--train {path}: no such file or folder")
    if path.is_dir():
        from haiku_kit.data import load_splits

        splits = load_splits(path)
        return [h for name in ("sft", "rl") if name in splits for h in splits[name]["haiku"]]
    if is_chat_file(path):
        return [r["haiku"] for r in _chat_rows(path) if isinstance(r["haiku"], str)]
    rows = _table_rows(path)
    return [r["haiku"] for r in rows if isinstance(r.get("haiku"), str)]
