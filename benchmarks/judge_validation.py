"""Validate the haiku judge (haiku_kit/verify/judge.py): pass rates of human and bad poem sets.

Calibration and report use different data. Thresholds (ON_TOPIC_MIN, ORDER_GAIN_MIN, and
the SLOR threshold of the comparison column) are chosen on TRAINING data only: ../shared
train_haiku.csv and the even rows of the kit's haiku.jsonl (`--calibrate` recomputes them).
The table is measured on the other data:

  should pass:  kit human haiku (odd rows of haiku.jsonl), reference answers (eval_data.json
                rows 0-127, the development set; rows 128-591 are the test set, never read)
  should fail:  distilled.jsonl (the filler corpus), filler (hand-written + the brief's
                examples + distilled's 20 most function-word-heavy), words shuffled within each
                line (keeps 5-7-5) of both human sets, both human sets under another row's
                topic, word salad (human-haiku words at random, filled to 5-7-5), and copies of
                the instruction re-lined to 5-7-5.

Each set's pass rate counts only poems the verifier calls valid (n = valid poems), with a
Wilson 95% CI, for: the rules-only judge (fluent = fluency_problems alone, the cheap GRPO-ready
part) on every poem and on the LM sample; rules + SLOR >= SLOR_MIN_COMPARED (for comparison
only); and the full judge (rules + word_order_gain with the embedded 270M base model), on a
seeded sample of --lm-n poems per set. Writes benchmarks/results/judge_validation.json, prints a markdown
table and 8 random (seeded) poems per set with their full verdict.

    OMP_NUM_THREADS=1 python benchmarks/judge_validation.py [--lm-n 100] [--no-lm]
        [--calibrate] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "haiku_kit" / "resources"
SHARED = REPO.parent / "shared" / "data" / "gemma_haiku"
DEV_ROWS = 128  # eval_data.json rows 0-127; the rest is the test set and is never read
WORST_DISTILLED = 20
# SLOR threshold of the comparison column: the 3rd percentile of training human poems that
# pass the rules (--calibrate: slor_min_suggested). The judge itself does not use SLOR.
SLOR_MIN_COMPARED = -0.25

Pair = tuple[str, str]  # (topic, poem)


# --------------------------------------------------------------------------- data


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def kit_human(part: str = "all") -> list[Pair]:
    """The kit's human haiku; part "train" = even rows (calibration), "report" = odd rows."""
    rows = [(r["topic"], r["haiku"]) for r in _jsonl(RESOURCES / "haiku.jsonl")]
    if part == "train":
        return rows[0::2]
    if part == "report":
        return rows[1::2]
    return rows


def distilled() -> list[Pair]:
    return [(r["topic"], r["haiku"]) for r in _jsonl(RESOURCES / "distilled.jsonl")]


def filler() -> list[Pair]:
    """Hand-written filler and the brief's two examples (resources/judge_filler.jsonl), plus the
    WORST_DISTILLED distilled poems with the largest share of function words."""
    from haiku_kit.verify.judge import FUNCTION_WORDS
    from haiku_kit.verify.text import words

    rows = [(r["topic"], r["haiku"]) for r in _jsonl(RESOURCES / "judge_filler.jsonl")]

    def share(pair: Pair) -> float:
        ws = words(pair[1])
        return sum(w in FUNCTION_WORDS for w in ws) / max(len(ws), 1)

    return rows + sorted(distilled(), key=share, reverse=True)[:WORST_DISTILLED]


def reference_train() -> list[Pair]:
    """../shared train_haiku.csv: (summary, haiku) rows, the reference's human answers."""
    with (SHARED / "train_haiku.csv").open(encoding="utf-8") as fh:
        return [(r["summary"].strip(), r["haiku"]) for r in csv.DictReader(fh)]


def reference_dev() -> list[Pair]:
    """eval_data.json rows 0-127 (development set) as (topic, reference answer)."""
    from haiku_kit.verify.text import topic_from_prompt

    rows = json.loads((SHARED / "eval_data.json").read_text(encoding="utf-8"))[:DEV_ROWS]
    return [(topic_from_prompt(r["conversations"][0]["content"]),
             r["conversations"][1]["content"]) for r in rows]


def shuffled(pairs: list[Pair], seed: int = 0) -> list[Pair]:
    """Each poem with its words shuffled within each line (syllable counts unchanged, so a
    valid poem stays valid); poems whose order did not change are dropped."""
    rng = random.Random(seed)
    out = []
    for topic, poem in pairs:
        lines = []
        for line in poem.strip().splitlines():
            ws = line.split()
            rng.shuffle(ws)
            lines.append(" ".join(ws))
        new = "\n".join(lines)
        if new.split() != poem.split():
            out.append((topic, new))
    return out


def wrong_topic(pairs: list[Pair], seed: int = 0) -> list[Pair]:
    """Each poem under the topic of another random row with a different topic."""
    from haiku_kit.verify.text import normalize

    rng = random.Random(seed)
    out = []
    for topic, poem in pairs:
        while True:
            other = pairs[rng.randrange(len(pairs))][0]
            if normalize(other) != normalize(topic):
                break
        out.append((other, poem))
    return out


def _fill(tokens: list[str], rng: random.Random, pattern=(5, 7, 5), tries: int = 200):
    """Lines of random tokens with exactly the pattern's syllable counts, or None."""
    from haiku_kit.verify.syllables import line_counts

    lines = []
    for target in pattern:
        for _ in range(tries):
            line: list[str] | None = []
            while True:
                line.append(rng.choice(tokens))
                counts = line_counts(" ".join(line))
                if target in counts:
                    break
                if min(counts, default=0) > target:
                    line = None
                    break
            if line:
                break
        else:
            return None
        lines.append(" ".join(line))
    return "\n".join(lines)


def word_salad(pairs: list[Pair], seed: int = 0) -> list[Pair]:
    """Each row's topic with a poem of words drawn at random from its own poem and two other
    human poems (so function words come at their natural rate and half the words are on
    topic), filled to 5-7-5."""
    from haiku_kit.verify.text import words

    rng = random.Random(seed)
    out = []
    for topic, poem in pairs:
        others = [pairs[rng.randrange(len(pairs))][1] for _ in range(2)]
        tokens = words(poem) * 2 + [w for p in others for w in words(p)]
        poem = _fill(tokens, rng)
        if poem:
            out.append((topic, poem))
    return out


INSTRUCTION_VARIANTS = (
    "Generate a haiku about the following topic: {topic}",
    "a haiku about the following topic: {topic}",
    "haiku about the following topic: {topic}",
    "Here is a haiku about the following topic: {topic}",
    "generate a haiku about {topic}",
    "the following topic: {topic} generate a haiku about the following topic",
)


def _cut(ws: list[str], pattern=(5, 7, 5)) -> str | None:
    """The first words of ws cut into lines of exactly the pattern's counts, or None."""
    from haiku_kit.verify.syllables import line_counts

    lines, pos = [], 0
    for target in pattern:
        line: list[str] = []
        while not (line and target in line_counts(" ".join(line))):
            if pos >= len(ws) or (line and min(line_counts(" ".join(line))) > target):
                return None
            line.append(ws[pos])
            pos += 1
        lines.append(" ".join(line))
    return "\n".join(lines)


def instruction_copies(topics: list[str]) -> list[Pair]:
    """The instruction (with its topic) re-lined into exact 5-7-5 where its words allow,
    starting at any word of a few phrasings of it: the prompt-copying hack. Topics whose
    words cannot be cut at 5-7-5 are skipped."""
    from haiku_kit.verify.text import words

    out = []
    for topic in topics:
        found = None
        for variant in INSTRUCTION_VARIANTS:
            ws = words(variant.format(topic=topic)) + words(topic)
            for start in range(len(ws)):
                found = _cut(ws[start:])
                if found:
                    break
            if found:
                break
        if found:
            out.append((topic, found))
    return out


def sets(shared: bool = True, seed: int = 0) -> dict[str, tuple[str, list[Pair]]]:
    """name -> (expected "pass" or "fail", pairs). Sets from ../shared only when shared."""
    human = kit_human("report")
    out = {
        "kit human (odd rows)": ("pass", human),
        "distilled.jsonl": ("fail", distilled()),
        "filler (hand + brief + worst distilled)": ("fail", filler()),
        "kit human, words shuffled in lines": ("fail", shuffled(human, seed)),
        "kit human, wrong topic": ("fail", wrong_topic(human, seed)),
        "word salad (human words)": ("fail", word_salad(human, seed)),
        "instruction copies": ("fail", instruction_copies(sorted({t for t, _ in human}))),
    }
    if shared and SHARED.is_dir():
        dev = reference_dev()
        out["reference dev answers (eval 0-127)"] = ("pass", dev)
        out["reference dev, words shuffled"] = ("fail", shuffled(dev, seed))
        out["reference dev, wrong topic"] = ("fail", wrong_topic(dev, seed))
    return out


# --------------------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(verdicts) -> dict:
    """Pass rate among valid poems, with n and the Wilson CI."""
    valid = [v for v in verdicts if v.valid]
    k = sum(v.good for v in valid)
    lo, hi = wilson(k, len(valid))
    return {"n_all": len(verdicts), "n": len(valid), "passed": k,
            "rate": k / len(valid) if valid else float("nan"), "ci95": [lo, hi]}


# --------------------------------------------------------------------------- calibration


def calibrate(model, tokenizer, n: int, seed: int) -> dict:
    """What the training data says the thresholds should be (printed; judge.py holds them).

    on topic: the training human cosines were filtered at >= 0.5, so their low percentiles
    only repeat the filter. A normal fitted by maximum likelihood to the truncated sample
    estimates the unfiltered distribution; its 5th percentile is the threshold an unfiltered
    human poem passes 95% of the time. Word-order gain (and SLOR, for comparison): the 3rd
    percentile of training human poems that are valid and pass the rules (so it only asks what
    the rules do not)."""
    import numpy as np
    from scipy import optimize, stats

    from haiku_kit.verify.haiku import check, extract_poem
    from haiku_kit.verify.judge import fluency_problems, slor, word_order_gain
    from haiku_kit.verify.similarity import cosine

    train = kit_human("train") + (reference_train() if SHARED.is_dir() else [])
    cos = np.array(cosine([t for t, _ in train], [p for _, p in train]))
    low = 0.5

    def nll(theta):
        mu, log_sd = theta
        sd = math.exp(log_sd)
        return -(stats.norm.logpdf(cos, mu, sd) - stats.norm.logsf(low, mu, sd)).sum()

    fit = optimize.minimize(nll, x0=[float(cos.mean()), math.log(float(cos.std()))])
    mu, sd = float(fit.x[0]), math.exp(float(fit.x[1]))
    out = {"cosine_observed_min": float(cos.min()), "cosine_fit_mu": mu, "cosine_fit_sd": sd,
           "on_topic_min_suggested": float(stats.norm.ppf(0.05, mu, sd))}
    if model is not None:
        rng = random.Random(seed)
        pools = {"kit human (even rows)": kit_human("train")}
        if SHARED.is_dir():
            pools["train_haiku.csv"] = reference_train()
        gains, slors = [], []
        for name, pairs in pools.items():
            poems = [extract_poem(p).poem for _, p in pairs]
            poems = [p for p in poems if check(p).is_haiku and not fluency_problems(p)]
            sample = rng.sample(poems, min(n, len(poems)))
            got = [g for g in word_order_gain(model, tokenizer, sample) if not math.isnan(g)]
            out[f"order_gain_pct_{name}"] = {q: float(np.percentile(got, q))
                                             for q in (1, 3, 5, 10, 50)}
            gains += got
            got = slor(model, tokenizer, sample)
            out[f"slor_pct_{name}"] = {q: float(np.percentile(got, q)) for q in (1, 3, 5, 10, 50)}
            slors += got
        out["order_gain_min_suggested"] = float(np.percentile(gains, 3))
        out["slor_min_suggested"] = float(np.percentile(slors, 3))
    return out


# --------------------------------------------------------------------------- main


def _show(verdict, topic: str) -> str:
    poem = verdict.poem.replace("\n", " / ")
    mark = "PASS" if verdict.good else "fail"
    slor_part = "" if verdict.order_gain is None else f" gain={verdict.order_gain:.2f}"
    why = "; ".join(verdict.reasons) or "-"
    return f"  [{mark}] {poem}  (topic: {topic[:50]}; cos={verdict.cosine:.2f}{slor_part}; {why})"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm-n", type=int, default=100,
                    help="poems per set scored with the LM (word-order gain and SLOR)")
    ap.add_argument("--no-lm", action="store_true", help="rules-only judge, no 270M model")
    ap.add_argument("--calibrate", action="store_true", help="recompute thresholds on train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "judge_validation.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import haiku_kit.verify.judge as J

    started = time.time()
    model = tokenizer = None
    if not args.no_lm or args.calibrate:
        from haiku_kit.model.load import load_model

        model, tokenizer = load_model("embedded", backend="hf", lora=None)
        model.eval()
    judge = J.Judge()
    report: dict = {
        "settings": {
            "on_topic_min": judge.on_topic_min, "order_gain_min": judge.order_gain_min,
            "order_shuffles": J.ORDER_SHUFFLES, "slor_min_compared": SLOR_MIN_COMPARED,
            "topic_copy_min": judge.topic_copy_min, "copy_threshold": J.COPY_THRESHOLD,
            "rules": list(J.RULES), "lm": None if args.no_lm else "embedded 270M base (fp32 CPU)",
            "lm_sample_per_set": None if args.no_lm else args.lm_n, "seed": args.seed,
            "similarity_model": "bundled all-MiniLM-L6-v2",
            "note": "pass rate = good / valid; Wilson 95% CI; thresholds chosen on train data",
        },
        "sets": {},
    }
    if args.calibrate:
        report["calibration"] = calibrate(model, tokenizer, args.lm_n, args.seed)
        print("calibration:", json.dumps(report["calibration"], indent=1))
    examples: dict[str, list[str]] = {}
    for name, (expect, pairs) in sets(seed=args.seed).items():
        topics, poems = [t for t, _ in pairs], [p for _, p in pairs]
        rules_only = judge.judge(poems, topics)
        entry = {"expect": expect, "rules_only": rate(rules_only)}
        shown = rules_only
        if not args.no_lm:
            rng = random.Random(args.seed)
            idx = sorted(rng.sample(range(len(pairs)), min(args.lm_n, len(pairs))))
            full = judge.judge([poems[i] for i in idx], [topics[i] for i in idx],
                               model=model, tokenizer=tokenizer)
            sub = [rules_only[i] for i in idx]
            scores = J.slor(model, tokenizer, [v.poem or " " for v in sub])
            with_slor = [replace(v, good=v.good and s >= SLOR_MIN_COMPARED)
                         for v, s in zip(sub, scores)]
            entry["rules_only_same_sample"] = rate(sub)
            entry["rules_plus_slor"] = rate(with_slor)
            entry["full"] = rate(full)
            shown = full
            topics = [topics[i] for i in idx]
        entry["parts_fail_among_valid"] = {
            part: sum(not getattr(v, part) for v in shown if v.valid)
            for part in ("fluent", "on_topic", "original")
        }
        report["sets"][name] = entry
        rng = random.Random(args.seed + 1)
        pick = rng.sample(range(len(shown)), min(8, len(shown)))
        examples[name] = [_show(shown[i], topics[i]) for i in pick]
        report["sets"][name]["examples"] = [asdict(replace(shown[i])) | {"topic": topics[i]}
                                            for i in pick]
    report["seconds"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    print(markdown(report))
    for name, lines in examples.items():
        print(f"\n{name}:")
        print("\n".join(lines))
    return report


def _fmt(r: dict | None) -> str:
    if not r:
        return "-"
    lo, hi = r["ci95"]
    return f"{r['rate']:.1%} [{lo:.1%}, {hi:.1%}] (n={r['n']})"


def markdown(report: dict) -> str:
    """The validation table as markdown."""
    rows = [("| set | target | rules only, all valid poems | rules only, LM sample "
             "| rules + SLOR (comparison) | **full judge: rules + word order** |"),
            "|---|---|---|---|---|---|"]
    for name, e in report["sets"].items():
        target = ">= 85%" if e["expect"] == "pass" else "<= 10%"
        rows.append(f"| {name} | {target} | {_fmt(e['rules_only'])} "
                    f"| {_fmt(e.get('rules_only_same_sample'))} | {_fmt(e.get('rules_plus_slor'))} "
                    f"| {_fmt(e.get('full'))} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
