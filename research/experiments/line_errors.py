"""Where the lines miss: exactness of each generated line by how many of its words have more than
one syllable, and the signed error of the lines that miss (too short < 0 < too long).

    python experiments/line_errors.py runs/F2/efficacy/sft/generations.jsonl runs/F2/eval/sft/generations.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from haiku_kit.verify import syllables as sy


def main(files: list[str]) -> None:
    exact = defaultdict(lambda: [0, 0])
    errors = defaultdict(Counter)
    for path in files:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if not rec["three_lines"]:
                continue
            for i, text in enumerate(rec["poem"].split("\n")[:3]):
                words = re.findall(r"[A-Za-z']+", text)
                key = min(3, sum(1 for w in words if sy.count(w) > 1))
                err = rec["line_errors"][i]
                exact[key][0] += 1
                exact[key][1] += err == 0
                errors[key][max(-3, min(3, err))] += 1
    total = sum(n for n, _ in exact.values())
    print("| words of 2+ syllables | lines | share | exact | error -3..+3 (|e|>3 folded) |")
    print("|---|---|---|---|---|")
    for key in sorted(exact):
        n, ok = exact[key]
        dist = " ".join(f"{e:+d}:{errors[key][e]}" for e in range(-3, 4))
        print(f"| {key}{'+' if key == 3 else ''} | {n} | {n / total:.0%} | {ok / n:.2f} | {dist} |")


if __name__ == "__main__":
    main(sys.argv[1:])
