"""How topical can a valid haiku of one-syllable words be? (research/log.md, sixteenth session)

The kit's models reach >= 50% valid by counting a line's syllables as its words, so they write
one-syllable words, and their Similarity on the reference's long topics stays below 0. This
script measures the ceiling of that regime with poems written by hand for the project, on the
reference's eval topics, for measurement only (never trained on): one poem per line, lines
split by " / ", line i for row i of ../shared/data/gemma_haiku/eval_data.json.

- experiments/oracle_one_syllable.txt: rows 0-127, every word of one syllable, each poem as
  close to its topic as the writer could make it;
- experiments/oracle_free_words.txt: rows 0-63, the same writer with no limit on words.

Each file is checked (kit verifier; one-syllable words where the file name says so), then
scored as the eval scores a model: Similarity = mean cos(MiniLM(topic), MiniLM(poem)) - 0.5,
95% bootstrap CI, by how many content words the poem shares with its topic. `--against` adds a
model's generations.jsonl (an eval's output) on the same rows, paired. The bag-of-words lines
score the topic's own content words alone, as the text a poem could share with it at most.

    python experiments/oracle_ceiling.py
    python experiments/oracle_ceiling.py --against runs/DC9/efficacy/sft/generations.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from topic_word_copies import content_words

from haiku_kit.data.splits import load_eval_data
from haiku_kit.evaluate.metrics import bootstrap_ci
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.similarity import get_scorer
from haiku_kit.verify.syllables import count, counts

HERE = Path(__file__).resolve().parent
REF_EVAL = HERE.parents[2] / "shared" / "data" / "gemma_haiku" / "eval_data.json"
FILES = [HERE / "oracle_one_syllable.txt", HERE / "oracle_free_words.txt"]


def read_poems(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ["\n".join(part.strip() for part in line.split(" / ")) for line in lines]


def problems(poems: list[str], one_syllable: bool) -> list[str]:
    out = []
    for i, poem in enumerate(poems):
        if not hk.check(poem).is_haiku:
            out.append(f"row {i}: not 5-7-5 by the kit's verifier: {poem!r}")
        long_words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", poem) if 1 not in counts(w)]
        if one_syllable and long_words:
            out.append(f"row {i}: words of more than one syllable {long_words}")
    return out


def line(name: str, topics: list[str], texts: list[str], scorer) -> np.ndarray:
    sims = np.asarray(scorer.cosine(topics, texts), dtype=float) - 0.5
    lo, hi = bootstrap_ci(sims)
    shared = [min(len(content_words(t) & content_words(p)), 2) for t, p in zip(topics, texts)]
    buckets = "; ".join(f"{k}{'+' if k == 2 else ''}: {sum(s == k for s in shared)} "
                        f"(cos {np.mean([c for c, s in zip(sims, shared) if s == k]) + 0.5:.3f})"
                        for k in (0, 1, 2) if k in shared)
    print(f"  {name:<34} Sim {sims.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]  sharing {buckets}")
    return sims


def paired(name: str, a: np.ndarray, b: np.ndarray) -> None:
    lo, hi = bootstrap_ci(a - b)
    print(f"  {name:<34} {np.mean(a - b):+.3f} [{lo:+.3f}, {hi:+.3f}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", type=Path, nargs="*", default=[],
                   help="generations.jsonl of a model's eval on the reference prompts, row i on row i "
                        "(benchmarks/efficacy.py: RUN/efficacy/MODEL/; experiments: runs/exp/NAME/LABEL/ref/)")
    a = p.parse_args()
    if not REF_EVAL.is_file():
        raise SystemExit(f"{REF_EVAL}: the reference eval set is absent (../shared beside the checkout)")
    rows = load_eval_data(str(REF_EVAL))[0]
    topics, answers = [r["topic"] for r in rows], [r["haiku"] for r in rows]
    scorer = get_scorer()
    poems = {f.stem: read_poems(f) for f in FILES}
    for name, rows in poems.items():
        bad = problems(rows, one_syllable="one_syllable" in name)
        if bad:
            raise SystemExit(f"{FILES[0].parent / name}.txt: " + "; ".join(bad[:5]))
    models = {}
    for path in a.against:
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if [r["topic"] for r in rows[:3]] != topics[:len(rows[:3])]:
            raise SystemExit(f"{path}: its rows are not the reference eval prompts in order")
        models[str(path)] = rows
    for n in sorted({len(rows) for rows in poems.values()}, reverse=True):
        t = topics[:n]
        print(f"first {n} reference topics:")
        one_words = [" ".join(sorted(w for w in content_words(x) if count(w) == 1)) or "the" for x in t]
        line("bag: topic's one-syllable words", t, one_words, scorer)
        line("bag: all the topic's content words", t, [" ".join(sorted(content_words(x))) for x in t], scorer)
        sims = {name: line(f"oracle: {name}", t, rows[:n], scorer) for name, rows in poems.items() if len(rows) >= n}
        sims["reference answers"] = line("reference answers", t, answers[:n], scorer)
        for path, rows in models.items():
            if len(rows) >= n:
                name = f"{Path(path).parts[-4]}/{Path(path).parent.name}"  # RUN/efficacy/MODEL/...
                sims[path] = line(name, t, [r["poem"] for r in rows[:n]], scorer)
                print(f"    valid {np.mean([r['is_haiku'] for r in rows[:n]]):.3f}")
                paired(f"oracle one-syllable - {name}", sims["oracle_one_syllable"], sims[path])
        if "oracle_free_words" in sims:
            paired("oracle free - oracle one-syllable", sims["oracle_free_words"], sims["oracle_one_syllable"])


if __name__ == "__main__":
    main()
