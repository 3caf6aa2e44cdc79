"""Haiku datasets: load sources, keep verified 5-7-5 poems, build disjoint SFT/RL/eval splits.

Every loader returns rows `{"topic", "haiku", "source_id"}` with the poem's lines joined by
"\\n" (sources may separate lines with newlines or " / "). `build_splits` then runs the stages
below, counting rows after each one in a `FilterReport`, and writes a `datasets.DatasetDict`
plus `{split}.jsonl` and `manifest.json`:

    loaded -> three_lines -> syllables -> exact_dedup -> near_dedup -> topic -> similarity
    -> sampled (optional max_rows) -> sft / rl / eval

Splits are disjoint by poem (deduplicated first) and by topic (rows are grouped by their
normalised topic and whole groups are dealt to splits), so RL never reuses an SFT row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from haiku_kit.errors import DataError

log = logging.getLogger(__name__)

Row = dict[str, str]

DEFAULT_TEMPLATE = "Generate a haiku about the following topic: {topic}"
# The reference's chat files start every user turn with this; the rest is the topic.
REFERENCE_PREFIX = "Generate a haiku about the following topic: "
SPLITS = ("sft", "rl", "eval")
EMBEDDED = "embedded"
# Column names tried, in order, when a source's columns are not given.
TOPIC_COLUMNS = ("topic", "keywords", "summary", "title")
HAIKU_COLUMNS = ("haiku", "text", "poem", "completion")


class BadRowWarning(UserWarning):
    """A source row could not be decoded and was skipped."""


@dataclass
class FilterReport:
    """Rows left after each stage, in order, plus the bad rows skipped while loading."""

    stages: list[tuple[str, int]] = field(default_factory=list)
    bad_rows: int = 0
    bad_row_messages: list[str] = field(default_factory=list)

    def add(self, stage: str, count: int) -> None:
        self.stages.append((stage, count))

    def count(self, stage: str) -> int:
        for name, n in reversed(self.stages):
            if name == stage:
                return n
        raise KeyError(f"no stage named {stage!r} in this report")

    def to_dict(self) -> dict[str, Any]:
        return {"stages": dict(self.stages), "bad_rows": self.bad_rows}

    def __str__(self) -> str:
        width = max((len(name) for name, _ in self.stages), default=5)
        lines = [f"{name:<{width}}  {n:>7,}" for name, n in self.stages]
        if self.bad_rows:
            lines.append(f"{'bad rows skipped':<{width}}  {self.bad_rows:>7,}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- normalising


def normalize_poem(text: str) -> str:
    """Lines (newlines or ' / ') with inner whitespace collapsed, joined by '\\n'."""
    from haiku_kit.haiku import split_lines

    return "\n".join(" ".join(line.split()) for line in split_lines(text))


def normalize_topic(topic: str) -> str:
    """The grouping key of a topic: lowercase words, punctuation and extra spaces dropped."""
    return " ".join(re.findall(r"[a-z0-9']+", topic.lower()))


def near_key(poem: str) -> str:
    """Near-duplicate key: lowercase letters only (spacing, punctuation, digits ignored)."""
    return re.sub(r"[^a-z]", "", poem.lower())


class _BadRows:
    """Skips or raises on undecodable rows, counting them in a report."""

    def __init__(self, on_bad_row: str, report: FilterReport | None):
        if on_bad_row not in ("skip", "raise"):
            raise DataError(f"on_bad_row must be 'skip' or 'raise', not {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.report = report

    def __call__(self, message: str) -> None:
        if self.on_bad_row == "raise":
            raise DataError(message)
        warnings.warn(message + " (skipped)", BadRowWarning, stacklevel=3)
        if self.report is not None:
            self.report.bad_rows += 1
            self.report.bad_row_messages.append(message)


def _text_field(record: Any, column: str | None) -> str | None:
    """A row's string field, topics given as keyword lists joined by ', '; None if unusable."""
    if column is None:
        return ""
    value = record.get(column) if isinstance(record, dict) else None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = ", ".join(v.strip() for v in value)
    return value if isinstance(value, str) else None


def _rows_from_records(
    records: Iterable[tuple[int, Any]],
    where: str,
    topic_col: str | None,
    haiku_col: str,
    id_col: str | None,
    bad: _BadRows,
    id_prefix: str,
) -> list[Row]:
    rows = []
    for number, record in records:
        haiku = _text_field(record, haiku_col)
        topic = _text_field(record, topic_col)
        for column, value in ((haiku_col, haiku), (topic_col, topic)):
            if value is None:
                got = "missing" if not isinstance(record, dict) or column not in record else \
                    f"a {type(record[column]).__name__}, not text"
                bad(f"{where}: row {number}: field {column!r} is {got}")
                break
        else:
            source_id = str(record.get(id_col)) if id_col and isinstance(record, dict) \
                and record.get(id_col) is not None else f"{id_prefix}:{number}"
            rows.append({"topic": " ".join(topic.split()), "haiku": normalize_poem(haiku),
                         "source_id": source_id})
    return rows


def _require_columns(columns: Iterable[str], needed: Iterable[str | None], where: str) -> None:
    present = set(columns)
    for column in needed:
        if column is not None and column not in present:
            raise DataError(f"{where}: no column {column!r} (columns: {sorted(present)})")


# --------------------------------------------------------------------------- loaders


def embedded_path() -> Path:
    """The bundled dataset of original haiku (resources/haiku.jsonl)."""
    return Path(str(resources.files("haiku_kit") / "resources" / "haiku.jsonl"))


def load_embedded() -> list[Row]:
    """The bundled haiku, written for this kit: every poem passes the strict 5-7-5 check."""
    rows = load_table(embedded_path(), on_bad_row="raise")
    return [{**row, "source_id": f"embedded:{i}"} for i, row in enumerate(rows)]


def _read_json_records(path: Path, bad: _BadRows) -> list[tuple[int, Any]]:
    """(row number, record) pairs of a .jsonl file (1-based line numbers) or a .json list."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict):  # {"train": [...]} or {"data": [...]} style files
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else data
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows")
        return list(enumerate(data, start=1))
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            bad(f"{path}: row {number}: not valid JSON ({err.msg})")
    return records


def load_table(
    path: str | Path,
    topic_col: str | None = "topic",
    haiku_col: str = "haiku",
    id_col: str | None = None,
    *,
    on_bad_row: str = "skip",
    report: FilterReport | None = None,
) -> list[Row]:
    """Rows of a .csv, .jsonl or .json file, mapping its columns to topic/haiku/source_id.

    `topic_col=None` leaves topics empty (`build_splits` derives them). A column missing from
    the file raises DataError naming it; an undecodable row (bad JSON, missing field,
    non-text value) is skipped with a BadRowWarning, or raises when on_bad_row="raise".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    bad = _BadRows(on_bad_row, report)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            _require_columns(reader.fieldnames or [], (topic_col, haiku_col, id_col), str(path))
            records = [(n, _csv_record(rec)) for n, rec in enumerate(reader, start=1)]
    elif suffix in (".jsonl", ".json"):
        records = _read_json_records(path, bad)
        dicts = [r for _, r in records if isinstance(r, dict)]
        for column in (topic_col, haiku_col, id_col):
            # A column no row has is a wrong mapping, not a bad row.
            if column is not None and dicts and not any(column in r for r in dicts):
                _require_columns(dicts[0].keys(), [column], str(path))
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv, .jsonl or .json)")
    return _rows_from_records(records, str(path), topic_col, haiku_col, id_col, bad, path.name)


def _csv_record(record: dict) -> dict:
    # csv gives None for a short row's missing cells: treat those as missing fields.
    return {k: v for k, v in record.items() if k is not None and v is not None}


def topic_from_prompt(text: str) -> str:
    """The topic of a reference-style user turn: the text after its fixed prompt prefix."""
    text = text.strip()
    text = text.removeprefix(REFERENCE_PREFIX.strip())
    return " ".join(text.split())


def load_conversations(
    path: str | Path, *, on_bad_row: str = "skip", report: FilterReport | None = None
) -> list[Row]:
    """Rows of a chat file: a JSON list (or JSONL) of {"conversations": [user, assistant]}.

    The topic is the user text after the reference prompt prefix, else the whole user text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    bad = _BadRows(on_bad_row, report)
    rows = []
    for number, record in _read_json_records(path, bad):
        turns = record.get("conversations", record.get("messages")) \
            if isinstance(record, dict) else None
        if not isinstance(turns, list):
            bad(f"{path}: row {number}: no 'conversations' list")
            continue
        user = next((t.get("content") for t in turns
                     if isinstance(t, dict) and t.get("role") == "user"), None)
        answer = next((t.get("content") for t in turns
                       if isinstance(t, dict) and t.get("role") == "assistant"), None)
        if not isinstance(user, str) or not isinstance(answer, str):
            missing = "user" if not isinstance(user, str) else "assistant"
            bad(f"{path}: row {number}: no text {missing} turn")
            continue
        rows.append({"topic": topic_from_prompt(user), "haiku": normalize_poem(answer),
                     "source_id": f"{path.name}:{number}"})
    return rows


def load_hub(
    name: str,
    topic_col: str | None,
    haiku_col: str,
    split: str = "train",
    *,
    on_bad_row: str = "skip",
    report: FilterReport | None = None,
) -> list[Row]:
    """Rows of a Hugging Face dataset (hub name, local folder, or .parquet/.json/.csv file).

    e.g. load_hub("statworx/haiku", "keywords", "text"). Never runs remote code.
    """
    import datasets

    local = Path(name)
    builders = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
    try:
        if local.is_file() and local.suffix.lower() in builders:
            ds = datasets.load_dataset(builders[local.suffix.lower()], data_files=str(local),
                                       split=split)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as err:
        raise DataError(f"cannot load dataset {name!r} (split {split!r}): {err}") from err
    _require_columns(ds.column_names, (topic_col, haiku_col), f"dataset {name!r}")
    bad = _BadRows(on_bad_row, report)
    records = enumerate(ds, start=1)
    return _rows_from_records(records, f"dataset {name!r}", topic_col, haiku_col, None, bad,
                              f"hub:{name}")


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str]) -> str | None:
    if wanted:
        return wanted
    return next((c for c in candidates if c in columns), None)


def _file_columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    for _, record in _read_json_records(path, _BadRows("skip", None)):
        if isinstance(record, dict):
            return list(record)
    return []


def is_chat_file(path: Path) -> bool:
    """True for the reference's chat format ({"conversations": [...]} rows)."""
    if path.suffix.lower() not in (".json", ".jsonl"):
        return False
    return any(c in ("conversations", "messages") for c in _file_columns(path))


def load_source(
    spec: str,
    topic_col: str | None = None,
    haiku_col: str | None = None,
    *,
    split: str = "train",
    on_bad_row: str = "skip",
    report: FilterReport | None = None,
) -> list[Row]:
    """Rows of "embedded", a .csv/.jsonl/.json path (table or chat), or "hub:NAME".

    Unset columns are guessed: the topic from topic/keywords/summary/title (none found:
    topics are derived later), the poem from haiku/text/poem/completion.
    """
    spec = str(spec)
    if spec == EMBEDDED:
        return load_embedded()
    if spec.startswith("hub:"):
        name = spec[4:]
        return load_hub(name, topic_col or "keywords", haiku_col or "text", split,
                        on_bad_row=on_bad_row, report=report)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {spec} (use 'embedded', a "
                                ".csv/.jsonl/.json file, or hub:NAME)")
    if path.is_dir():
        return load_hub(spec, topic_col or "keywords", haiku_col or "text", split,
                        on_bad_row=on_bad_row, report=report)
    if not (topic_col or haiku_col) and is_chat_file(path):
        return load_conversations(path, on_bad_row=on_bad_row, report=report)
    columns = _file_columns(path)
    haiku = _pick(columns, haiku_col, HAIKU_COLUMNS)
    if haiku is None:
        raise DataError(f"{path}: no poem column found (tried {', '.join(HAIKU_COLUMNS)}); "
                        f"columns: {columns}; pass --haiku-col")
    return load_table(path, _pick(columns, topic_col, TOPIC_COLUMNS), haiku,
                      on_bad_row=on_bad_row, report=report)


# --------------------------------------------------------------------------- filtering


def _stage(report: FilterReport, name: str, rows: list[Row], before: int) -> list[Row]:
    report.add(name, len(rows))
    if not rows:
        raise DataError(f"no rows left after the {name!r} stage (it removed all {before}); "
                        f"counts so far:\n{report}")
    return rows


def filter_rows(
    rows: Sequence[Row],
    pattern: Sequence[int] = (5, 7, 5),
    strict: bool = False,
    report: FilterReport | None = None,
) -> list[Row]:
    """Keep 3-line poems the verifier accepts, dropping exact then near duplicates.

    Raises DataError naming the stage that removed every row.
    """
    from haiku_kit.haiku import check

    report = report if report is not None else FilterReport()
    rows = [{**r, "haiku": normalize_poem(r["haiku"]), "topic": " ".join(r["topic"].split())}
            for r in rows]
    n = len(rows)
    _stage(report, "loaded", rows, n)
    rows = _stage(report, "three_lines", [r for r in rows if r["haiku"].count("\n") == 2], n)
    n = len(rows)
    rows = _stage(report, "syllables",
                  [r for r in rows if check(r["haiku"], tuple(pattern), strict=strict).is_haiku],
                  n)
    for name, key in (("exact_dedup", lambda r: r["haiku"]), ("near_dedup", lambda r: near_key(r["haiku"]))):
        seen: set[str] = set()
        kept = []
        for row in rows:
            k = key(row)
            if k not in seen:
                seen.add(k)
                kept.append(row)
        rows = _stage(report, name, kept, len(rows))
    return rows


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
    from haiku_kit.similarity import get_scorer

    scorer = get_scorer(model)
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


# --------------------------------------------------------------------------- splits


def build_prompt(topic: str, template: str = DEFAULT_TEMPLATE,
                 system: str | None = None) -> list[dict[str, str]]:
    """The chat prompt for a topic: one user turn. `system` text is merged into that turn
    (Gemma's chat template has no system role)."""
    try:
        text = template.format(topic=topic)
    except (KeyError, IndexError, ValueError) as err:
        raise DataError(f"prompt template {template!r} must use only {{topic}} ({err})") from None
    if system:
        text = f"{system.strip()}\n\n{text}"
    return [{"role": "user", "content": text}]


# Topics this close (MiniLM cosine) are near-duplicates: "a kite" / "a kite in the wind" 0.93,
# "a newborn baby" / "a newborn baby asleep" 0.78. On the embedded set plus 700 new topics,
# linking at 0.75 makes groups of at most 3 topics, so the splits stay balanced.
NEAR_TOPIC_COSINE = 0.75


def near_topic_groups(topics: Sequence[str], threshold: float = NEAR_TOPIC_COSINE,
                      model: str | None = None) -> dict[str, str]:
    """topic -> group key, shared by every topic linked to it through a chain of near-duplicates
    (equal after normalising, or MiniLM cosine >= threshold)."""
    import numpy as np

    from haiku_kit.similarity import get_scorer

    keys = sorted({normalize_topic(t) for t in topics})
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(keys) > 1:
        vectors = get_scorer(model).embed(keys)
        for i, j in zip(*np.nonzero(np.triu(vectors @ vectors.T, 1) >= threshold)):
            parent[root(int(i))] = root(int(j))
    group = {key: keys[root(i)] for i, key in enumerate(keys)}
    return {t: group[normalize_topic(t)] for t in topics}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(f < 0 for f in values) or sum(values) <= 0:
        raise DataError(f"fractions must be three non-negative numbers (sft, rl, eval) with a "
                        f"positive sum, not {list(fractions)}")
    total = sum(values)
    return tuple(f / total for f in values)  # type: ignore[return-value]


def assign_splits(rows: Sequence[Row], fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
                  seed: int = 0, group_of: dict[str, str] | None = None) -> dict[str, list[Row]]:
    """Deal whole topic groups to sft/rl/eval so each split nears its share of rows.

    Groups are shuffled with `seed` and each goes to the split furthest below its target, so
    one normalised topic never spans two splits. `group_of` (topic -> group key, from
    `near_topic_groups`) also keeps near-duplicate topics together.
    """
    shares = _check_fractions(fractions)
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = (group_of or {}).get(row["topic"]) or normalize_topic(row["topic"])
        groups.setdefault(key, []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    targets = [share * len(rows) for share in shares]
    out: dict[str, list[Row]] = {name: [] for name in SPLITS}
    for key in keys:
        deficits = [t - len(out[name]) if t > 0 else float("-inf")
                    for t, name in zip(targets, SPLITS)]
        out[SPLITS[deficits.index(max(deficits))]].extend(groups[key])
    return out


def _features(with_messages: bool):
    import datasets

    turn = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    cols = {"topic": datasets.Value("string"), "haiku": datasets.Value("string"),
            "source_id": datasets.Value("string"), "prompt": turn}
    if with_messages:
        cols["messages"] = turn
    return datasets.Features(cols)


def _split_records(rows: Sequence[Row], name: str, template: str, system: str | None):
    records = []
    for row in rows:
        prompt = build_prompt(row["topic"], template, system)
        record = {"topic": row["topic"], "haiku": row["haiku"], "source_id": row["source_id"],
                  "prompt": prompt}
        if name == "sft":
            record["messages"] = prompt + [{"role": "assistant", "content": row["haiku"]}]
        records.append(record)
    return records


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_entry(spec: str) -> dict[str, Any]:
    path = embedded_path() if spec == EMBEDDED else Path(spec)
    if path.is_file():
        return {"source": spec, "sha256": sha256_file(path)}
    return {"source": spec, "sha256": None}  # a hub dataset or folder: named, not hashed


def build_splits(
    rows: Sequence[Row],
    out_dir: str | Path | None,
    fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    seed: int = 0,
    min_similarity: float | None = 0.5,
    *,
    pattern: Sequence[int] = (5, 7, 5),
    strict: bool = False,
    template: str = DEFAULT_TEMPLATE,
    system: str | None = None,
    topic_fn: Callable[[str], str] | None = None,
    similarity_model: str | None = None,
    max_rows: int | None = None,
    report: FilterReport | None = None,
    sources: Sequence[str] = (),
    near_topic_cosine: float | None = NEAR_TOPIC_COSINE,
):
    """Filter rows, split them into disjoint sft/rl/eval, and save them to `out_dir`.

    `min_similarity=None` skips the MiniLM topic-poem filter. With the filter on, topics whose
    MiniLM cosine reaches `near_topic_cosine` ("a kite" / "a kite in the wind") land in the
    same split, so eval topics have no near-duplicate among the training topics (None: group
    by the normalised topic only). `max_rows` samples that many
    rows (with `seed`) before splitting. `sources` (specs or paths) are hashed into the
    manifest. `out_dir=None` builds in memory only. Returns the DatasetDict.
    """
    import datasets

    shares = _check_fractions(fractions)
    report = report if report is not None else FilterReport()
    rows = filter_rows(rows, pattern, strict, report)
    before = len(rows)
    rows = [r for r in fill_topics(rows, topic_fn, similarity_model) if r["topic"]]
    rows = _stage(report, "topic", rows, before)
    if min_similarity is not None:
        from haiku_kit.similarity import cosine

        scores = cosine([r["topic"] for r in rows], [r["haiku"] for r in rows],
                        model=similarity_model)
        before = len(rows)
        rows = _stage(report, "similarity",
                      [r for r, s in zip(rows, scores) if s >= min_similarity], before)
    if max_rows is not None and len(rows) > max_rows:
        if max_rows < 1:
            raise DataError(f"max_rows must be at least 1, not {max_rows}")
        rows = random.Random(seed).sample(list(rows), max_rows)
        report.add("sampled", len(rows))
    group_of = None
    if min_similarity is not None and near_topic_cosine is not None:
        group_of = near_topic_groups([r["topic"] for r in rows], near_topic_cosine, similarity_model)
    parts = assign_splits(rows, shares, seed, group_of)
    for name in SPLITS:
        report.add(name, len(parts[name]))

    dd = datasets.DatasetDict()
    for name in SPLITS:
        features = _features(name == "sft")
        records = _split_records(parts[name], name, template, system)
        # Column-wise so an empty split (fraction 0) still has its columns.
        dd[name] = datasets.Dataset.from_dict(
            {col: [r[col] for r in records] for col in features}, features=features)
    if out_dir is not None:
        _save(dd, Path(out_dir), report, {
            "seed": seed, "fractions": list(shares), "min_similarity": min_similarity,
            "pattern": list(pattern), "strict": strict, "template": template, "system": system,
            "max_rows": max_rows,
            "topic_source": "topic_fn" if topic_fn else "source or MiniLM keyphrase",
            "sources": [_source_entry(s) for s in sources],
        })
    return dd


def _save(dd, out_dir: Path, report: FilterReport, settings: dict[str, Any]) -> None:
    from datasets.utils import logging as ds_logging

    from haiku_kit import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    quiet = ds_logging.is_progress_bar_enabled()
    if quiet:
        ds_logging.disable_progress_bar()  # one bar per split is noise in CLI output
    try:
        dd.save_to_disk(str(out_dir))
    finally:
        if quiet:
            ds_logging.enable_progress_bar()
    for name, split in dd.items():
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for record in split:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    manifest = {
        "haiku_kit_version": __version__,
        **settings,
        "stages": report.to_dict()["stages"],
        "bad_rows": report.bad_rows,
        "splits": {name: len(split) for name, split in dd.items()},
        "topics": {name: len({normalize_topic(t) for t in split["topic"]})
                   for name, split in dd.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                           encoding="utf-8")


def load_splits(out_dir: str | Path):
    """The DatasetDict saved by build_splits."""
    import datasets

    out_dir = Path(out_dir)
    if not (out_dir / "dataset_dict.json").is_file():
        raise DataError(f"{out_dir}: not a splits folder (no dataset_dict.json); build one with "
                        "`haiku-kit data build --out {out_dir}`")
    return datasets.load_from_disk(str(out_dir))


# --------------------------------------------------------------------------- CLI


def cli_data_build(args) -> int:
    """`haiku-kit data build`: load, filter and split a source; print the per-stage counts."""
    report = FilterReport()
    try:
        rows = load_source(args.source, args.topic_col, args.haiku_col,
                           on_bad_row=args.on_bad_row, report=report)
        dd = build_splits(rows, args.out, seed=args.seed, min_similarity=args.min_similarity,
                          report=report, sources=[args.source])
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}")
        if report.stages:
            print(report)
        return 2
    print(report)
    print(f"wrote {', '.join(f'{k}={len(v)}' for k, v in dd.items())} to {args.out}")
    return 0
