"""Score a model's outputs with the reference's metrics (plus CIs and diagnostics).

The reference run (axeld5/gemma_haiku, full_eval.py) drew one unseeded sample per prompt with
max_new_tokens=50 (which cut answers short) and printed point estimates. Here generation is
batched and seeded, the token limit is generous and its hit rate is reported, k samples per
prompt are supported (pass@k), and every rate has a 95% bootstrap confidence interval.

Metric definitions (per output; rates are means over all outputs):
- good:          the headline: valid (haiku, below) and fluent and on_topic and original, as
                 verify.judge judges the poem (docs/judge.md). Each part is a rate of its own:
                 fluent (no filler pattern; with judge_lm, word order likelier than shuffled),
                 on_topic (cos(topic, poem) >= judge.ON_TOPIC_MIN), original (no copy of the
                 instruction or the topic). A rising "haiku" with a flat "good" is filler.
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
                 instruction (text.copies_prompt, the measure the GRPO monitor uses too: topic
                 words do not count as copying).
- preamble:      extract_poem had to strip a preamble ("Here's a haiku...").
- reference_haiku, reference_similarity, reference_total (the reference protocol only,
                 evaluate(reference=True)): the published table's columns as its full_eval.py
                 made them (evaluate/protocol.py): pyphen on the answer cut out of the decoded
                 generation at "\n<end_of_turn>", similarity of that answer to the topic parsed
                 out of the prompt, their sum.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from haiku_kit.data.sources import rows_of
from haiku_kit.errors import DataError
from haiku_kit.evaluate import protocol as protocols
from haiku_kit.evaluate.metrics import (
    N_BOOT,
    TrainIndex,
    bootstrap_ci,
    pass_at_k_table,
    pyphen_counts,
    pyphen_is_haiku,
)
from haiku_kit.generate.write import (
    Generations,
    SamplingSettings,
    generate,
    loaded_model,
)
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.judge import Judge
from haiku_kit.verify.text import COPY_THRESHOLD, PATTERN, copy_fraction, prompt_text

RATE_METRICS = (
    "good", "fluent", "on_topic", "original",
    "haiku", "haiku_raw", "pyphen_haiku", "three_lines", "train_overlap", "train_near",
    "prompt_copy", "preamble", "extracted", "empty", "hit_limit", "reference_haiku",
)
MEAN_METRICS = ("similarity", "total", "pyphen_total", "distance", "copy_fraction", "words",
                "tokens", "reference_similarity", "reference_total")
# NaN when similarity was skipped (null in the files); the last two only under the reference protocol
NAN_FIELDS = ("cosine", "similarity", "total", "pyphen_total", "reference_similarity",
              "reference_total")
FIELD_OF = {"haiku": "is_haiku", "haiku_raw": "is_haiku_raw"}  # metric -> record field


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
        return cls.from_files(out / "result.json", out / "generations.jsonl")

    @classmethod
    def from_files(cls, result_json: str | Path, generations: str | Path) -> EvalResult:
        """A result from its two files under any names (benchmarks/results keeps MODEL.json
        and MODEL.generations.jsonl side by side)."""
        data = json.loads(Path(result_json).read_text())
        with open(generations, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        for r in records:
            for key in NAN_FIELDS[:4] + tuple(k for k in NAN_FIELDS[4:] if k in r):
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
    judge_lm: tuple[Any, Any] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    reference: bool = False,
    raw: Sequence[Sequence[str]] | None = None,
) -> EvalResult:
    """Score outputs (one text or k texts per topic) with the metrics in the module docstring.

    prompts: the prompts the outputs answer (chat messages or text), for the prompt-copy
    measure; None: no copy check. scorer: anything with .cosine(topics, texts) (default: the
    shared MiniLM scorer); similarity=False skips similarity and the judge (their metrics
    become NaN). judge_lm: (model, tokenizer) for the judge's word-order check (verify.judge;
    None: the judge's rules alone decide "fluent").
    reference=True adds the reference protocol's metrics (reference_haiku, reference_similarity,
    reference_total: evaluate/protocol.py), cut from `raw` (per output: the new tokens decoded
    with their special tokens; a Generations brings its own), else from the texts themselves.
    """
    groups = _as_groups(completions)
    if isinstance(completions, Generations):
        hit_limit = completions.hit_limit if hit_limit is None else hit_limit
        num_tokens = completions.num_tokens if num_tokens is None else num_tokens
        raw = completions.raw if raw is None else raw
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
            if reference:
                answer = protocols.reference_answer(str(raw[i][j]) if raw is not None else str(text))
                record.update(reference_answer=answer,
                              reference_topic=protocols.reference_topic(prompt) if prompt else topic,
                              reference_counts=pyphen_counts(answer),
                              reference_haiku=pyphen_is_haiku(answer))
            records.append(record)

    if similarity and records:
        if scorer is None:
            from haiku_kit.verify.similarity import get_scorer

            scorer = get_scorer()
        cos = scorer.cosine([r["topic"] for r in records], [r["completion"] for r in records])
    else:
        cos = [math.nan] * len(records)
    for r, c in zip(records, cos):
        r["cosine"] = float(c)
        r["similarity"] = float(c) - 0.5
        r["total"] = float(r["is_haiku"]) + r["similarity"]
        r["pyphen_total"] = float(r["pyphen_haiku"]) + r["similarity"]
    if reference:
        _reference_similarity(records, scorer if similarity else None)
    _judge_records(records, [prompt_text(prompts[r["prompt_index"]]) if prompts is not None else None
                             for r in records], scorer if similarity else None, judge_lm)

    info = dict(meta or {})
    info.update(n=len(records), n_prompts=len(groups),
                k=max((len(g) for g in groups), default=0), train_answers=len(train),
                pattern=list(PATTERN), n_boot=n_boot, seed=seed)
    return summarize(records, info, n_boot=n_boot, seed=seed)


def _reference_similarity(records: list[dict], scorer: Any) -> None:
    """reference_similarity = cos(reference topic, reference answer) - 0.5, embedding only the
    pairs that differ from the (topic, completion) pair already scored; NaN without a scorer."""
    redo = [i for i, r in enumerate(records)
            if (r["reference_answer"], r["reference_topic"]) != (r["completion"], r["topic"])]
    cos = {i: r["cosine"] for i, r in enumerate(records)}
    if scorer is None:
        cos = dict.fromkeys(cos, math.nan)
    elif redo:
        got = scorer.cosine([records[i]["reference_topic"] for i in redo],
                            [records[i]["reference_answer"] for i in redo])
        cos.update({i: float(c) for i, c in zip(redo, got)})
    for i, r in enumerate(records):
        r["reference_similarity"] = cos[i] - 0.5
        r["reference_total"] = float(r["reference_haiku"]) + r["reference_similarity"]


def _judge_records(records: list[dict], prompts: list[str | None], scorer: Any,
                   judge_lm: tuple[Any, Any] | None, cosines: list[float] | None = None) -> None:
    """The judge's verdict on each record's poem (verify.judge): good = valid, fluent, on topic
    and original, each part kept beside "haiku" (valid). Without a similarity scorer (or the
    poems' `cosines`, already computed) nothing is judged (the parts become NaN: on topic cannot
    be known)."""
    if (scorer is None and cosines is None) or not records:
        for r in records:
            r.update(good=None, fluent=None, on_topic=None, original=None, judge_reasons=[])
        return
    judge = Judge()
    poems = [r["poem"] for r in records]
    topics = [r["topic"] for r in records]
    present = [i for i, p in enumerate(poems) if p.strip()]
    if cosines is None:
        cosines = [0.0] * len(poems)
        if present:
            got = scorer.cosine([topics[i] for i in present], [poems[i] for i in present])
            for i, c in zip(present, got):
                cosines[i] = float(c)
    filled = [p if p is not None else judge.template.format(topic=t) for p, t in zip(prompts, topics)]
    model, tokenizer = judge_lm or (None, None)
    verdicts = judge.judge(poems, topics, filled, model=model, tokenizer=tokenizer, cosines=cosines)
    for r, v in zip(records, verdicts):
        # The record's own verdict on validity (it also accepts a raw output that is a haiku
        # when extraction misread it) decides "valid"; the judge adds the other three parts.
        reasons = list(v.reasons)
        if r["is_haiku"] and not v.valid:
            reasons = reasons[1:]  # the checker's reason comes first; the raw output was valid
        r.update(fluent=v.fluent, on_topic=v.on_topic, original=v.original,
                 good=bool(r["is_haiku"] and v.fluent and v.on_topic and v.original),
                 poem_cosine=v.cosine, order_gain=v.order_gain, judge_reasons=reasons)


def rejudge(result: EvalResult, judge_lm: tuple[Any, Any] | None = None,
            note: str = "") -> EvalResult:
    """The same outputs judged again by today's judge (verify.judge), for results saved before
    the judge changed: each record's good / fluent / on topic / original and reasons, then the
    metrics and CIs. The poem-topic cosines the records keep are reused (MiniLM is run only
    for records without one); judge_lm: as in evaluate. meta["rejudged"] = `note` (say which
    code judged), so a results file tells a re-judged row from a fresh one."""
    records = [dict(r) for r in result.records]
    cosines = None
    if all(isinstance(r.get("poem_cosine"), (int, float)) for r in records):
        cosines = [float(r["poem_cosine"]) for r in records]
    scorer = None
    if cosines is None:
        from haiku_kit.verify.similarity import get_scorer

        scorer = get_scorer()
    _judge_records(records, [None] * len(records), scorer, judge_lm, cosines)
    meta = {**result.meta, "rejudged": note or True}
    return summarize(records, meta, n_boot=meta.get("n_boot", N_BOOT), seed=meta.get("seed", 0))


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
    return EvalResult(records, metrics, ci, distributions, pass_at_k_table(records), meta)


def paired_difference(before: EvalResult, after: EvalResult, metric: str = "haiku",
                      n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float] | None:
    """after - before on the same prompts: (mean per-prompt difference, 95% CI low, high), the
    prompts resampled together; None unless both scored the same topics in the same order."""
    def per_prompt(result: EvalResult) -> dict[int, tuple[str, list[float]]]:
        out: dict[int, tuple[str, list[float]]] = {}
        for r in result.records:
            out.setdefault(r["prompt_index"], (r["topic"], []))[1].append(
                float(r[FIELD_OF.get(metric, metric)]))
        return out

    a, b = per_prompt(before), per_prompt(after)
    if not a or a.keys() != b.keys() or any(a[i][0] != b[i][0] for i in a):
        return None
    diffs = [float(np.mean(b[i][1]) - np.mean(a[i][1])) for i in sorted(a)]
    low, high = bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
    return float(np.mean(diffs)), low, high


def evaluate_references(dataset: Any, train_answers: Sequence[str] = (), **kwargs) -> EvalResult:
    """Score a dataset's reference answers (its `haiku` column) as if a model wrote them.

    The upper bound for a model, and a check on the evaluator: references that pass the data
    filter should score Haiku 1.0.
    """
    rows = rows_of(dataset)
    for i, row in enumerate(rows):
        for col in ("topic", "haiku"):
            if not isinstance(row.get(col), str):
                raise DataError(f"row {i}: needs a text '{col}' column to evaluate references")
    prompts = [r["prompt"] for r in rows] if rows and all(r.get("prompt") for r in rows) else None
    kwargs.setdefault("meta", {"model": "references"})
    return evaluate([r["haiku"] for r in rows], [r["topic"] for r in rows], prompts,
                    train_answers, **kwargs)


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
    constrained: bool = False,
    candidates: int = 1,
    judge_word_order: bool = True,
    protocol: str = "kit",
) -> EvalResult:
    """generate + evaluate on rows with `topic` and `prompt` columns; model as in write_haiku.

    constrained=True generates with the syllable-constrained decoder, with clean line ends (no
    line cut off on "the", no poem on a comma); such a row is reported beside the free-sampling
    one, never instead of it (meta["constrained"] says which).
    candidates > 1 (constrained only): of that many drafts per poem, valid and fluent (the
    judge's rules) first, then the likeliest.
    judge_word_order: the judge also checks word order with the embedded base model (judge_lm),
    on the poems that pass every other part.
    protocol "reference": also the reference's own metrics (evaluate(reference=True)); the
    caller passes its settings (protocol.eval_plan), and meta["protocol"] records it."""
    if protocol not in protocols.PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of: {', '.join(protocols.PROTOCOLS)}")
    if isinstance(model, (str, Path)):
        model_name = str(model)
        model, tokenizer = loaded_model(model_name, None if adapter is None else str(adapter))
    else:
        model_name = type(model).__name__
    sampling = sampling or SamplingSettings()
    prompts = [r["prompt"] for r in rows]
    gens = generate(model, tokenizer, prompts, k=k, seed=seed, sampling=sampling,
                    batch_size=batch_size, max_new_tokens=max_new_tokens, constrained=constrained,
                    candidates=candidates, clean_line_ends=constrained)
    meta = {"name": name or model_name, "model": model_name, "adapter": adapter,
            "constrained": constrained, "clean_line_ends": constrained, "candidates": candidates,
            "sampling": asdict(sampling), "max_new_tokens": max_new_tokens,
            "hit_limit_share": gens.hit_limit_share, "judge_word_order": judge_word_order,
            "protocol": protocol}
    return evaluate(gens, [r["topic"] for r in rows], prompts, train_answers, seed=seed,
                    meta=meta, judge_lm=judge_lm() if judge_word_order else None,
                    reference=protocol == "reference")


@functools.lru_cache(maxsize=1)
def judge_lm() -> tuple[Any, Any]:
    """(model, tokenizer) the judge's word-order check reads: the embedded Gemma 3 270M base,
    whatever model is evaluated (the judge's threshold was set with it, docs/judge.md). Loaded
    once a process, with the random state put back, so evaluating never moves a later draw."""
    import torch

    from haiku_kit.model.load import load_model

    with torch.random.fork_rng(devices=[]):
        model, tokenizer = load_model("embedded", backend="hf", lora=None)
    model.eval()
    return model, tokenizer
