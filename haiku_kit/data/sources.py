"""Data sources -> rows: every loader returns `{"topic", "haiku", "source_id"}` rows with the
poem's lines joined by "\\n" (sources may separate lines with newlines or " / ").

Sources: the embedded set of original haiku, a .csv/.jsonl/.json file with a column mapping, the
chat format `{"conversations": [user, assistant]}`, and Hugging Face datasets. An undecodable
row is skipped with a BadRowWarning (or raises, on_bad_row="raise") and counted in a
`FilterReport`, which data.build_splits then fills with the rows left after each filter.
Eval prompts from a chat file keep the user turn verbatim (`load_chat_prompts`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from haiku_kit.data.files import csv_records, field_problem, json_records, jsonl_records
from haiku_kit.errors import DataError
from haiku_kit.verify.haiku import split_lines
from haiku_kit.verify.text import topic_from_prompt

log = logging.getLogger(__name__)

Row = dict[str, str]

EMBEDDED = "embedded"
# Column names tried, in order, when a source's columns are not given.
TOPIC_COLUMNS = ("topic", "keywords", "summary", "title")
HAIKU_COLUMNS = ("haiku", "text", "poem", "completion")


class BadRowWarning(UserWarning):
    """A source row could not be decoded and was skipped."""


@dataclass
class FilterReport:
    """Rows left after each filter step, in order, plus the bad rows skipped while loading."""

    steps: list[tuple[str, int]] = field(default_factory=list)
    bad_rows: int = 0
    bad_row_messages: list[str] = field(default_factory=list)

    def add(self, step: str, count: int) -> None:
        self.steps.append((step, count))

    def count(self, step: str) -> int:
        for name, n in reversed(self.steps):
            if name == step:
                return n
        raise KeyError(f"no filter step named {step!r} in this report")

    def to_dict(self) -> dict[str, Any]:
        # "phases" is the manifest.json key older run folders were written with.
        return {"phases": dict(self.steps), "bad_rows": self.bad_rows}

    def __str__(self) -> str:
        width = max((len(name) for name, _ in self.steps), default=5)
        lines = [f"{name:<{width}}  {n:>7,}" for name, n in self.steps]
        if self.bad_rows:
            lines.append(f"{'bad rows skipped':<{width}}  {self.bad_rows:>7,}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- normalising


def normalize_poem(text: str) -> str:
    """Lines (newlines or ' / ') with inner whitespace collapsed, joined by '\\n'."""
    return "\n".join(" ".join(line.split()) for line in split_lines(text))


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
            if too_long := field_problem(value, column):
                bad(f"{where}: row {number}: {too_long}")
                break
        else:
            source_id = str(record.get(id_col)) if id_col and isinstance(record, dict) \
                and record.get(id_col) is not None else f"{id_prefix}:{number}"
            rows.append({"topic": " ".join(topic.split()), "haiku": normalize_poem(haiku),
                         "source_id": source_id})
    return rows


def rows_of(dataset: Any) -> list[dict]:
    """Rows as dicts, from a datasets.Dataset or any iterable of mappings."""
    return dataset.to_list() if hasattr(dataset, "to_list") else [dict(r) for r in dataset]


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


def _read_json_records(path: Path, bad: _BadRows) -> Iterator[tuple[int, Any]]:
    """(row number, record) pairs of a .jsonl file (1-based line numbers, streamed) or a .json
    list; data/files.py names the file and line of a non-UTF-8 byte, an empty file, an oversize line."""
    if path.suffix.lower() == ".json":
        return iter(json_records(path))
    return jsonl_records(path, bad)


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
        records = _csv_rows(path, bad, (topic_col, haiku_col, id_col))
    elif suffix in (".jsonl", ".json"):
        records = list(_read_json_records(path, bad))
        dicts = [r for _, r in records if isinstance(r, dict)]
        for column in (topic_col, haiku_col, id_col):
            # A column no row has is a wrong mapping, not a bad row.
            if column is not None and dicts and not any(column in r for r in dicts):
                _require_columns(dicts[0].keys(), [column], str(path))
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv, .jsonl or .json)")
    return _rows_from_records(records, str(path), topic_col, haiku_col, id_col, bad, path.name)


def _csv_rows(path: Path, bad: _BadRows, needed) -> Iterator[tuple[int, dict]]:
    """(row number, record) of a CSV file, streamed, after checking its header has `needed`."""
    checked = False
    for number, record, header in csv_records(path, bad):
        if not checked:
            _require_columns(header, needed, str(path))
            checked = True
        # csv gives None for a short row's missing cells: treat those as missing fields.
        yield number, {k: v for k, v in record.items() if k is not None and v is not None}


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
        turns = _turns(record)
        if turns is None:
            bad(f"{path}: row {number}: no 'conversations' list")
            continue
        user, answer = _turn_text(turns, "user"), _turn_text(turns, "assistant")
        if not isinstance(user, str) or not isinstance(answer, str):
            missing = "user" if not isinstance(user, str) else "assistant"
            bad(f"{path}: row {number}: no text {missing} turn")
            continue
        rows.append({"topic": topic_from_prompt(user), "haiku": normalize_poem(answer),
                     "source_id": f"{path.name}:{number}"})
    return rows


def _turns(record: Any) -> list | None:
    turns = record.get("conversations", record.get("messages")) if isinstance(record, dict) else None
    return turns if isinstance(turns, list) else None


def _turn_text(turns: list, role: str) -> Any:
    """The content of the first turn with this role (None when there is none)."""
    return next((t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == role),
                None)


def load_topic_list(source: str | Path) -> list[str]:
    """Topics without poems, one a line ('#' starts a comment line): "embedded" is the kit's
    own list (resources/prompt_topics.txt, everyday feelings and situations written for it)."""
    path = (Path(str(resources.files("haiku_kit") / "resources" / "prompt_topics.txt"))
            if str(source) == "embedded" else Path(source))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the topic list ({err})") from None
    topics = [" ".join(line.split()) for line in lines if line.strip()
              and not line.lstrip().startswith("#")]
    if not topics:
        raise DataError(f"{path}: no topic in the topic list (one a line)")
    return list(dict.fromkeys(topics))


def load_chat_prompts(path: str | Path) -> list[dict]:
    """Eval rows of a chat file with the user turn kept verbatim as the prompt (as the
    reference evaluated): {topic, prompt, haiku (the reference answer or None), source_id}."""
    path = Path(path)
    rows = []
    for number, record in _read_json_records(path, _BadRows("raise", None)):
        turns = _turns(record) or []
        user = _turn_text(turns, "user")
        if not isinstance(user, str):
            raise DataError(f"{path}: row {number}: no text user turn in 'conversations'")
        rows.append({"topic": topic_from_prompt(user),
                     "prompt": [{"role": "user", "content": user}],
                     "haiku": _turn_text(turns, "assistant"), "source_id": f"{path.name}:{number}"})
    return rows


def load_prompt_table(path: str | Path) -> list[dict]:
    """Eval rows of a .jsonl file ({topic, prompt?, haiku?, ...} kept whole) or a table file."""
    path = Path(path)
    if path.suffix != ".jsonl":
        return load_table(path)
    rows = []
    for number, record in _read_json_records(path, _BadRows("raise", None)):
        if not isinstance(record, dict) or not isinstance(record.get("topic"), str):
            raise DataError(f"{path}: line {number} has no text 'topic' field")
        rows.append(record)
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


# A local dataset folder is handed to `datasets`, which reads every data file in it whole: it is
# checked first (a bounded walk), so a wrong folder fails at once instead of reading for minutes.
MAX_FOLDER_ENTRIES = 10_000
MAX_FOLDER_BYTES = 4 << 30
SPARSE_MIN_BYTES = 64 << 20


def check_local_folder(path: Path) -> tuple[int, int]:
    """(data files, bytes) of a local dataset folder, or DataError naming what is wrong: too
    many entries, too many bytes, or a sparse file (mostly holes: a disk image or a file of
    zeros, never an export of poems). Hidden files and folders are skipped, as `datasets` does."""
    files = size = seen = 0
    for top, dirs, names in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(names):
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise DataError(f"{path}: over {MAX_FOLDER_ENTRIES} files; point --source at "
                                "the dataset's own folder or one of its files")
            file = Path(top) / name
            if name.startswith((".", "_")) or not file.is_file():
                continue
            stat = file.stat()
            on_disk = getattr(stat, "st_blocks", 0) * 512
            if stat.st_size > SPARSE_MIN_BYTES and on_disk * 16 < stat.st_size:
                raise DataError(f"{file}: a sparse file ({stat.st_size:,} bytes, {on_disk:,} on "
                                f"disk), not a data file; move it out of {path}")
            files, size = files + 1, size + stat.st_size
            if size > MAX_FOLDER_BYTES:
                raise DataError(f"{path}: over {MAX_FOLDER_BYTES >> 30} GiB of files (at {file}); "
                                "point --source at one file or a smaller folder")
    return files, size


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str]) -> str | None:
    if wanted:
        return wanted
    return next((c for c in candidates if c in columns), None)


def _file_columns(path: Path) -> list[str]:
    """The columns of a file's first row (bad rows are left for the real read to report)."""
    if path.suffix.lower() == ".csv":
        return next((header for _, _, header in csv_records(path, _ignore)), [])
    for _, record in _read_json_records(path, _ignore):
        if isinstance(record, dict):
            return list(record)
    return []


def _ignore(message: str) -> None:
    """Bad rows seen while only sniffing a file's columns: reported once, by the real read."""


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
        check_local_folder(path)
        return load_hub(spec, topic_col or "keywords", haiku_col or "text", split,
                        on_bad_row=on_bad_row, report=report)
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv, .jsonl or "
                        ".json, a dataset folder, or hub:NAME)")
    if not (topic_col or haiku_col) and is_chat_file(path):
        return load_conversations(path, on_bad_row=on_bad_row, report=report)
    columns = _file_columns(path)
    haiku = _pick(columns, haiku_col, HAIKU_COLUMNS)
    if haiku is None:
        raise DataError(f"{path}: no poem column found (tried {', '.join(HAIKU_COLUMNS)}); "
                        f"columns: {columns}; pass --haiku-col")
    return load_table(path, _pick(columns, topic_col, TOPIC_COLUMNS), haiku,
                      on_bad_row=on_bad_row, report=report)
