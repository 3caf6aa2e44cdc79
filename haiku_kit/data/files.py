"""Reading users' data files in bounded memory, with one clear line for every bad file or row.

Caps (documented in docs/reliability.md):
- MAX_LINE_BYTES: a JSONL line or CSV line longer than this is a bad row; it is skipped without
  ever being held in memory whole.
- MAX_FIELD_CHARS: a topic or poem longer than this is a bad row (a haiku has under 200).
- MAX_JSON_BYTES: a .json file (read whole, by its nature) larger than this is refused; JSONL and
  CSV are streamed line by line and have no size cap.
Errors that make a whole file unusable (not UTF-8, empty, a CSV field over the csv module's
limit) raise DataError naming the file and line; row-level problems go to the caller's `bad`.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from haiku_kit.errors import DataError

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_JSON_BYTES",
    "MAX_LINE_BYTES",
    "csv_records",
    "field_problem",
    "json_records",
    "jsonl_records",
    "require_content",
]

MAX_LINE_BYTES = 1 << 20
MAX_FIELD_CHARS = 10_000
MAX_JSON_BYTES = 256 << 20
_CHUNK = 1 << 16


def require_content(path: Path) -> None:
    """DataError naming the file when it is empty or holds only blank space."""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            if chunk.strip():
                return
    raise DataError(f"{path}: the file is empty")


def _lines(path: Path, bad: Callable[[str], None]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each line, decoded strictly as UTF-8 (a BOM is dropped).
    A line over MAX_LINE_BYTES goes to `bad` and is read past in chunks, never held whole."""
    with path.open("rb") as fh:
        number = 0
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                size = len(raw) + _skip_rest_of_line(fh)
                bad(f"{path}: line {number} has {size} bytes, over the {MAX_LINE_BYTES} read")
                continue
            yield number, _decode(raw, path, number)


def _skip_rest_of_line(fh) -> int:
    skipped = 0
    while chunk := fh.readline(_CHUNK):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = raw[err.start]
        raise DataError(
            f"{path}: line {number} is not UTF-8 (byte 0x{byte:02x} at column {err.start + 1}); "
            "save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff") if number == 1 else text


def jsonl_records(path: Path, bad: Callable[[str], None]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) of a JSONL file, streamed; bad JSON goes to `bad`."""
    require_content(path)
    for number, line in _lines(path, bad):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            bad(f"{path}: row {number}: not valid JSON ({err.msg})")
            continue
        except RecursionError:  # "[[[[...]]]]": Python's parser gives up past ~1,000 levels
            bad(f"{path}: row {number}: JSON nested too deeply")
            continue
        yield number, record


def json_records(path: Path) -> list[tuple[int, Any]]:
    """(row number, record) of a .json list (or {"train": [...]}-style object), read whole."""
    require_content(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DataError(
            f"{path}: {size} bytes, over the {MAX_JSON_BYTES} a .json file may have; "
            "save it as JSONL (one row per line), which is streamed"
        )
    raw = path.read_bytes()
    text = _decode_whole(raw, path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    if isinstance(data, dict):  # {"train": [...]} or {"data": [...]} style files
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    return list(enumerate(data, start=1))


def _decode_whole(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 (byte 0x{raw[err.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


def csv_records(path: Path, bad: Callable[[str], None]) -> Iterator[tuple[int, dict, list[str]]]:
    """(row number, record, header) of a CSV file, streamed. A field over the csv module's
    limit raises DataError naming the line (the reader cannot go on past it)."""
    require_content(path)
    lines = (text for _, text in _lines(path, bad))
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: no header line")
        number = 0
        for values in reader:
            if not values:  # a blank line, skipped and not counted, as csv.DictReader does
                continue
            number += 1
            record: dict = dict(zip(header, values + [None] * (len(header) - len(values))))
            if len(values) > len(header):
                record[None] = values[len(header) :]
            yield number, record, header
    except csv.Error as err:
        raise DataError(
            f"{path}: line {reader.line_num}: {err} (poems over {MAX_FIELD_CHARS} characters "
            "are not read; check the file's quoting)"
        ) from None


def field_problem(value: str, column: str) -> str | None:
    """Why a text field is not a usable row ("field 'haiku' has N characters..."), or None."""
    if len(value) > MAX_FIELD_CHARS:
        return f"field {column!r} has {len(value)} characters, over the {MAX_FIELD_CHARS} read"
    # a NUL or other control character is a broken export, not a poem: a model trained on it
    # learns to write it (line breaks and tabs are layout, and are kept)
    control = next((i for i, ch in enumerate(value) if ch not in "\n\r\t"
                    and unicodedata.category(ch) == "Cc"), None)
    if control is not None:
        return (f"field {column!r} holds a control character (U+{ord(value[control]):04X}) at "
                f"character {control + 1}")
    return None
