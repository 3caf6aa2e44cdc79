"""Shared pieces of the efficacy experiments (issue 14): fixed eval sets, extra SFT data, one
measurement routine, and a results log.

Every experiment script builds a RunConfig from the cpu-demo preset plus overrides, trains with
the kit's own run_sft / run_grpo, then calls `measure` on the same fixed eval sets:

- "ref": the first N prompts of ../shared/data/gemma_haiku/eval_data.json (evaluation only),
- "demo": the first N rows of the cpu-demo eval split (embedded set, fractions 0.6/0.2/0.2, seed 0),

at the reference's sampling (temperature 1.0, top_p 0.95, top_k 64), one sample per prompt.
Results go to experiments/results.jsonl (one line per model measured).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from haiku_kit.config import resolve_config

RUNS = REPO / "runs" / "exp"
SPLITS = RUNS / "_splits"
RESULTS = REPO / "research" / "experiments" / "results.jsonl"
REF_EVAL = REPO.parent / "shared" / "data" / "gemma_haiku" / "eval_data.json"
STAGING = Path(os.environ.get("HAIKU_STAGING", "staging"))  # extra rows to try; shipped rows live in haiku.jsonl
REF_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 64}


def config(name: str, overrides: list[str] = ()):
    cfg = resolve_config("cpu-demo", list(overrides), RUNS / name)
    cfg.data.splits_dir = str(SPLITS)
    return cfg


def base_splits():
    """The cpu-demo splits of the embedded set (built once)."""
    from haiku_kit.data.splits import build_run_splits, load_splits

    if not (SPLITS / "manifest.json").is_file():
        cfg = resolve_config("cpu-demo", [], RUNS / "_tmp")
        build_run_splits(cfg, SPLITS)
    return load_splits(SPLITS)


def eval_sets(n_ref: int = 64, n_demo: int = 64) -> dict[str, list[dict]]:
    from haiku_kit.data.splits import load_eval_data

    base_splits()
    demo, _ = load_eval_data(str(SPLITS))
    ref, _ = load_eval_data(str(REF_EVAL))
    return {"ref": ref[:n_ref], "demo": demo[:n_demo]}


def _norm_topic(topic: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", topic.lower()).split())


def staged_rows(kinds=("long", "short")) -> list[dict]:
    """The writers' rows so far, as {topic, haiku, source_id}."""
    rows = []
    for kind in kinds:
        path = STAGING / f"haiku_{kind}.jsonl"
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                rec = json.loads(line)
                rows.append({"topic": rec["topic"], "haiku": rec["haiku"], "source_id": f"{kind}:{i}"})
    return rows


def clean_extra(rows: list[dict], forbidden_topics: list[str], max_topic_cos: float = 0.75,
                min_similarity: float = 0.5) -> tuple[list[dict], dict]:
    """Kit filters (3 lines, verifier, dedup), topic-poem similarity, and no topic equal or
    near (MiniLM cosine >= max_topic_cos) to a forbidden (eval) topic."""
    import numpy as np

    from haiku_kit.data.sources import normalize_poem
    from haiku_kit.data.splits import filter_rows
    from haiku_kit.verify.similarity import get_scorer

    report = {"loaded": len(rows)}
    rows = filter_rows(rows, strict=True)
    report["verified_dedup"] = len(rows)
    scorer = get_scorer()
    sims = scorer.cosine([r["topic"] for r in rows], [r["haiku"] for r in rows])
    rows = [r for r, s in zip(rows, sims) if s >= min_similarity]
    report["similarity"] = len(rows)
    forbidden_norm = {_norm_topic(t) for t in forbidden_topics}
    rows = [r for r in rows if _norm_topic(r["topic"]) not in forbidden_norm]
    emb_f = np.asarray(scorer.embed(list(forbidden_topics)))
    emb_r = np.asarray(scorer.embed([r["topic"] for r in rows]))
    near = (emb_r @ emb_f.T).max(axis=1) if len(rows) else np.zeros(0)
    rows = [r for r, c in zip(rows, near) if c < max_topic_cos]
    report["topic_disjoint"] = len(rows)
    for r in rows:
        r["haiku"] = normalize_poem(r["haiku"])
    return rows, report


def with_extra_sft(splits, extra: list[dict]):
    """The splits with `extra` rows appended to sft (messages built like the kit's)."""
    import datasets

    from haiku_kit.verify.text import build_prompt

    known = set(splits["sft"]["haiku"]) | set(splits["rl"]["haiku"]) | set(splits["eval"]["haiku"])
    recs = []
    for r in extra:
        if r["haiku"] in known:
            continue
        prompt = build_prompt(r["topic"])
        recs.append({"topic": r["topic"], "haiku": r["haiku"], "source_id": r["source_id"],
                     "prompt": prompt, "messages": prompt + [{"role": "assistant", "content": r["haiku"]}]})
    sft = datasets.concatenate_datasets(
        [splits["sft"], datasets.Dataset.from_list(recs, features=splits["sft"].features)])
    out = datasets.DatasetDict(dict(splits))
    out["sft"] = sft.shuffle(seed=0)
    return out


def forbidden_topics() -> list[str]:
    sets = eval_sets(n_ref=592, n_demo=10_000)
    return [r["topic"] for r in sets["ref"]] + [r["topic"] for r in sets["demo"]]


def measure(cfg, adapter, label: str, sets: dict[str, list[dict]], train_answers=(),
            sampling: dict | None = None, max_new_tokens: int = 48, batch_size: int = 32,
            model_tok=None, k: int = 1) -> dict:
    """Evaluate one model on every set; returns {set: summary} and appends to results.jsonl."""
    from haiku_kit.evaluate.scoring import run_eval
    from haiku_kit.generate.write import SamplingSettings
    from haiku_kit.model.load import load_from_config as load_for

    model, tok = model_tok or load_for(cfg, adapter, trainable=False)
    sampling = SamplingSettings(**(sampling or REF_SAMPLING)) if sampling != "greedy" \
        else SamplingSettings.greedy()
    out = {}
    for set_name, rows in sets.items():
        began = time.perf_counter()
        res = run_eval(model, rows, tokenizer=tok, train_answers=train_answers, k=k, seed=0,
                       sampling=sampling, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       name=label)
        res.save(RUNS / label / set_name)  # generations.jsonl, for experiments/topic_word_copies.py
        recs = res.records
        three = [r for r in recs if r["three_lines"]]
        exact = [sum(1 for r in three if r["line_errors"][i] == 0) / max(1, len(three)) for i in range(3)]
        summary = {
            "n": len(recs),
            "haiku": res.metrics["haiku"], "haiku_ci": res.ci["haiku"],
            "similarity": res.metrics["similarity"], "similarity_ci": res.ci["similarity"],
            "distance": res.metrics["distance"],
            "three_lines": sum(r["three_lines"] for r in recs) / len(recs),
            "line_exact": exact,
            "train_overlap": sum(r["train_overlap"] for r in recs) / len(recs),
            "hit_limit": res.meta.get("hit_limit_share"),
            "mean_tokens": sum(r["tokens"] or 0 for r in recs) / len(recs),
            "eval_s": time.perf_counter() - began,
            "samples": [r["completion"] for r in recs[:4]],
            "k": k,
            # per prompt (k samples each, side by side), in order: for paired comparisons
            "valid_bits": "".join("1" if r["is_haiku"] else "0" for r in recs),
        }
        out[set_name] = summary
        print(f"[{label}] {set_name}: haiku {summary['haiku']:.3f} "
              f"[{summary['haiku_ci'][0]:.3f}, {summary['haiku_ci'][1]:.3f}] "
              f"dist {summary['distance']:.2f} lines {summary['three_lines']:.2f} "
              f"exact {'/'.join(f'{e:.2f}' for e in exact)} sim {summary['similarity']:.3f} "
              f"({summary['eval_s']:.0f}s)", flush=True)
    return out


def log(experiment: str, label: str, settings: dict, timings: dict, results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    entry = {"experiment": experiment, "label": label, "settings": settings, "timings": timings,
             "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def timed(fn, *args, **kwargs):
    began = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - began
