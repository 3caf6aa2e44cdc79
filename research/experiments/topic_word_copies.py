"""Which of a topic's words reach the poem, by their syllable count, and what that does to
cos(topic, poem) and to validity (research/log.md, fourteenth session).

Each FILE is an eval's generations.jsonl (topic, poem, is_haiku, cosine), a sample list
(topic, poem, valid, cosine), a corpus (topic, haiku, cosine; all valid) or a pool
(build_distilled_corpus.py --save-pool: topic, completions; scored here):

    python experiments/topic_word_copies.py ../runs/DC9/efficacy/sft/generations.jsonl \
        ../haiku_kit/resources/distilled.jsonl --first 128
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from haiku_kit.data.topics import _STOPWORDS
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.syllables import count


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z']*", text.lower()) if w not in _STOPWORDS and len(w) > 2}


def samples(path: Path, first: int) -> list[dict]:
    """{topic, poem, valid, cosine} per sample."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = rows[:first] if first else rows
    out = []
    for r in rows:
        if "completions" in r:
            for text in r["completions"]:
                poem = hk.extract_poem(text).poem
                out.append({"topic": r["topic"], "poem": poem, "valid": hk.check(poem).is_haiku})
        elif "haiku" in r:
            out.append({"topic": r["topic"], "poem": r["haiku"], "valid": True, "cosine": r["cosine"]})
        else:
            out.append({"topic": r["topic"], "poem": r["poem"], "cosine": r["cosine"],
                        "valid": r["is_haiku"] if "is_haiku" in r else r["valid"]})
    if any("cosine" not in s for s in out):
        from haiku_kit.verify.similarity import get_scorer

        sims = get_scorer().cosine([s["topic"] for s in out], [s["poem"] for s in out])
        for s, sim in zip(out, sims):
            s["cosine"] = float(sim)
    return out


def report(name: str, rows: list[dict]) -> None:
    total, copied, copied_valid = Counter(), Counter(), Counter()
    by_shared: dict[str, list[dict]] = {"0": [], "1": [], "2+": []}
    for r in rows:
        poem_words = content_words(r["poem"])
        shared = content_words(r["topic"]) & poem_words
        by_shared[str(min(len(shared), 2)) + ("+" if len(shared) >= 2 else "")].append(r)
        for word in content_words(r["topic"]):
            n = min(count(word), 4)
            total[n] += 1
            copied[n] += word in poem_words
            copied_valid[n] += word in poem_words and r["valid"]
    words = Counter(min(count(w), 4) for r in rows for w in re.findall(r"[a-z][a-z']*", r["poem"].lower()))
    print(f"{name}: {len(rows)} samples, valid {sum(r['valid'] for r in rows) / len(rows):.3f}, "
          f"words of one syllable {words[1] / max(sum(words.values()), 1):.3f}")
    print("  topic words copied, by syllables: " + "; ".join(
        f"{n}{'+' if n == 4 else ''}: {copied[n]}/{total[n]} = {copied[n] / total[n]:.2f} "
        f"(in a valid poem {copied_valid[n]})" for n in sorted(total) if total[n]))
    print("  by topic words shared: " + "; ".join(
        f"{k}: {len(g)} samples, valid {sum(r['valid'] for r in g) / len(g):.2f}, "
        f"cos {sum(r['cosine'] for r in g) / len(g):.3f}" for k, g in by_shared.items() if g))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--first", type=int, default=0, help="first N rows of each file (0: all)")
    a = p.parse_args()
    for file in a.files:
        report(str(file), samples(file, a.first))


if __name__ == "__main__":
    main()
