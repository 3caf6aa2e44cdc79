"""Append the writers' staged haiku to the embedded training set, through the kit's filters.

Kept rows: strict 5-7-5 (most common pronunciations), not an exact or near duplicate of any
embedded poem or of each other, no line reused from another poem, cos(topic, poem) >= 0.5, and
a topic that is neither equal nor near (MiniLM cosine >= 0.75) to any reference eval topic
(../shared/data/gemma_haiku/eval_data.json, used here only to keep it out of training).

    python experiments/grow_embedded.py            # prints the counts per stage, writes nothing
    python experiments/grow_embedded.py --write    # rewrites haiku_kit/resources/haiku.jsonl
"""

from __future__ import annotations

import argparse
import json
import re

import harness as H

from haiku_kit.data.sources import embedded_path, load_embedded
from haiku_kit.data.splits import near_key


def line_key(line: str) -> str:
    return re.sub(r"[^a-z]", "", line.lower())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--write", action="store_true")
    args = p.parse_args()

    existing = load_embedded()
    ref_topics: list[str] = []
    if H.REF_EVAL.is_file():
        from haiku_kit.data.splits import load_eval_data

        ref_topics = [r["topic"] for r in load_eval_data(str(H.REF_EVAL))[0]]
    staged = H.staged_rows()
    rows, report = H.clean_extra(staged, ref_topics or ["-"])
    if ref_topics:  # the shipped rows obey the same rule: drop those near a reference eval topic
        import numpy as np

        from haiku_kit.verify.similarity import get_scorer

        scorer = get_scorer()
        near = (np.asarray(scorer.embed([r["topic"] for r in existing]))
                @ np.asarray(scorer.embed(ref_topics)).T).max(axis=1)
        dropped = [r["topic"] for r, c in zip(existing, near) if c >= 0.75]
        existing = [r for r, c in zip(existing, near) if c < 0.75]
        report["embedded_dropped_near_reference"] = dropped
    known = {near_key(r["haiku"]) for r in existing}
    lines = {line_key(line) for r in existing for line in r["haiku"].split("\n")}
    kept = []
    for r in rows:
        key = near_key(r["haiku"])
        poem_lines = [line_key(line) for line in r["haiku"].split("\n")]
        if key in known or any(line in lines for line in poem_lines):
            continue
        known.add(key)
        lines.update(poem_lines)
        kept.append({"topic": r["topic"], "haiku": r["haiku"]})
    report["new_vs_embedded"] = len(kept)
    print(json.dumps(report), f"embedded before: {len(existing)}, after: {len(existing) + len(kept)}")
    if args.write:
        rows_out = [{"topic": r["topic"], "haiku": r["haiku"]} for r in existing] + kept
        embedded_path().write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_out),
                                   encoding="utf-8")
        print(f"wrote {len(rows_out)} rows to {embedded_path()}")


if __name__ == "__main__":
    main()
