"""Topics for poems that come without one: an extractive keyphrase chosen by MiniLM, offline,
or the caller's own `topic_fn`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from haiku_kit.data.sources import Row
from haiku_kit.errors import DataError
from haiku_kit.verify import similarity
from haiku_kit.verify.text import normalize

_STOPWORDS = frozenset(
    """
a as an the and or but nor so yet of to in on at by for with from into onto over under up
down out off is are was were be been being am do does did have has had i me my mine you your
yours he him his she her hers it its we us our ours they them their theirs this that these
those there here then than when while where who whom whose which what why how not no all
each every some any one too very just still now again only own same such can will would
shall should may might must let lets like through across till until upon about above below
after before back away once twice more most much many few
""".split()  # noqa: SIM905 - a word list reads better as text
)


def keyphrase_candidates(poem: str, max_words: int = 3) -> list[str]:
    """Noun-ish 1-3 word phrases of a poem: spans inside a line with no stopword at either end."""
    found: dict[str, None] = {}
    for line in poem.lower().splitlines():
        words = re.findall(r"[a-z][a-z'-]*", line)
        for size in range(1, max_words + 1):
            for i in range(len(words) - size + 1):
                span = words[i:i + size]
                if span[0] in _STOPWORDS or span[-1] in _STOPWORDS or len(span[-1]) < 3:
                    continue
                found[" ".join(span)] = None
    return list(found)


def derive_topics(poems: Sequence[str], model: str | None = None) -> list[str]:
    """An extractive topic per poem: the candidate phrase whose MiniLM embedding is closest to
    the poem's. Offline, no API key."""
    scorer = similarity.get_scorer(model)
    topics = []
    for poem in poems:
        candidates = keyphrase_candidates(poem) or [poem.splitlines()[0] if poem else ""]
        vectors = scorer.embed([poem] + candidates)
        scores = vectors[1:] @ vectors[0]
        topics.append(candidates[int(scores.argmax())])
    return topics


def fill_topics(
    rows: Sequence[Row],
    topic_fn: Callable[[str], str] | None = None,
    similarity_model: str | None = None,
) -> list[Row]:
    """Rows with every empty topic filled: by `topic_fn(poem)` when given, else derive_topics."""
    missing = [i for i, r in enumerate(rows) if not r["topic"].strip()]
    if not missing:
        return list(rows)
    poems = [rows[i]["haiku"] for i in missing]
    if topic_fn is not None:
        new = [topic_fn(p) for p in poems]
        for poem, topic in zip(poems, new):
            if not isinstance(topic, str):
                raise DataError(f"topic_fn returned {type(topic).__name__}, not text, for "
                                f"poem {poem!r}")
    else:
        new = derive_topics(poems, similarity_model)
    out = list(rows)
    for i, topic in zip(missing, new):
        out[i] = {**rows[i], "topic": " ".join(topic.split())}
    return out

# Topics this close (MiniLM cosine) are near-duplicates: "a kite" / "a kite in the wind" (0.93),
# "a newborn baby" / "a newborn baby asleep" (0.78). Measured on the embedded set plus 700 new
# topics, linking at 0.75 yields groups of at most 3 topics, so the splits stay balanced.
NEAR_TOPIC_COSINE = 0.75


def near_topic_groups(topics: Sequence[str], threshold: float = NEAR_TOPIC_COSINE,
                      model: str | None = None) -> dict[str, str]:
    """Map each topic to a group key shared by every topic linked to it by a chain of
    near-duplicates (equal after normalising, or MiniLM cosine >= threshold)."""
    import numpy as np

    keys = sorted({normalize(t) for t in topics})
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(keys) > 1:
        vectors = similarity.get_scorer(model).embed(keys)
        for i, j in zip(*np.nonzero(np.triu(vectors @ vectors.T, 1) >= threshold)):
            parent[root(int(i))] = root(int(j))
    group = {k: keys[root(i)] for i, k in enumerate(keys)}
    return {t: group[normalize(t)] for t in topics}


def far_from(candidates: Sequence[str], others: Sequence[str],
             threshold: float = NEAR_TOPIC_COSINE, model: str | None = None) -> list[str]:
    """The candidates that are no near-duplicate of any of `others` (equal after normalising,
    or MiniLM cosine >= threshold), in order: training topics kept apart from eval topics."""
    import numpy as np

    taken = {normalize(t) for t in others}
    out = [t for t in candidates if normalize(t) not in taken]
    if out and others:
        scorer = similarity.get_scorer(model)
        cos = np.asarray(scorer.embed(out)) @ np.asarray(scorer.embed(list(others))).T
        out = [t for t, near in zip(out, cos.max(axis=1) >= threshold) if not near]
    return out


def fresh_topics(candidates: Sequence[str], avoid: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """far_from(candidates, avoid), less any topic equal (after normalising) to a `taken` one
    or to an earlier candidate: prompt-only topics added to a stage's own, never twice."""
    seen, out = {normalize(t) for t in taken}, []
    for topic in far_from(candidates, avoid):
        if normalize(topic) not in seen:
            seen.add(normalize(topic))
            out.append(topic)
    return out
