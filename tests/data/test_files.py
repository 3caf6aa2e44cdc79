"""haiku_kit.data.files: streamed, bounded reading of users' files; one clear line per bad input."""

from __future__ import annotations

import csv
import json
import tracemalloc

import pytest

from haiku_kit.data.files import (
    MAX_FIELD_CHARS,
    MAX_LINE_BYTES,
    csv_records,
    field_problem,
    json_records,
    jsonl_records,
)
from haiku_kit.errors import DataError

ROW = {"topic": "autumn", "haiku": "a\nb\nc"}


def _collect(iterator):
    return list(iterator)


def test_jsonl_streams_rows_with_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\ufeff" + json.dumps(ROW) + "\n\n{broken\n" + json.dumps(ROW) + "\n")
    bad = []
    rows = _collect(jsonl_records(path, bad.append))
    assert [n for n, _ in rows] == [1, 4] and rows[0][1] == ROW
    assert bad == [
        f"{path}: row 3: not valid JSON (Expecting property name enclosed in double quotes)"
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_non_utf8_names_file_line_and_byte(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    good = {".jsonl": json.dumps(ROW) + "\n", ".csv": "topic,haiku\nautumn,x\n", ".json": "[\n"}[
        suffix
    ]
    path.write_bytes(good.encode() + '{"topic": "caf\u00e9"}\n'.encode("latin-1"))
    reader = {
        ".jsonl": lambda: _collect(jsonl_records(path, print)),
        ".csv": lambda: _collect(csv_records(path, print)),
        ".json": lambda: json_records(path),
    }[suffix]
    line = good.count("\n") + 1
    with pytest.raises(DataError) as err:
        reader()
    assert str(err.value) == (
        f"{path}: line {line} is not UTF-8 (byte 0xe9 at column 15); save the file as UTF-8"
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
@pytest.mark.parametrize("content", [b"", b"  \n\n \t\n"])
def test_empty_file_says_empty(tmp_path, suffix, content):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"^{path}: the file is empty$"):
        if suffix == ".json":
            json_records(path)
        else:
            _collect((jsonl_records if suffix == ".jsonl" else csv_records)(path, print))


def test_csv_field_over_the_csv_limit_names_the_line(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(
        'topic,haiku\nautumn,"a\nb\nc"\nwinter,"' + "x" * (csv.field_size_limit() + 10) + '"\n'
    )
    rows = []
    with pytest.raises(DataError) as err:
        for row in csv_records(path, print):
            rows.append(row)  # noqa: PERF402 - the rows read before the error
    assert len(rows) == 1 and rows[0][1] == {"topic": "autumn", "haiku": "a\nb\nc"}
    assert str(err.value).startswith(f"{path}: line 5: field larger than field limit")


def test_csv_rows_match_dictreader(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('topic,haiku\n\nautumn,"a\nb\nc"\nshort\nlong,x,extra\n')
    with path.open(newline="") as fh:
        expected = list(csv.DictReader(fh))
    got = [record for _, record, _ in csv_records(path, print)]
    assert got == expected
    assert [n for n, _, _ in csv_records(path, print)] == [1, 2, 3]


def test_oversize_jsonl_line_is_a_bad_row_read_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.jsonl"
    huge = json.dumps({"topic": "t", "haiku": "x" * (16 * MAX_LINE_BYTES)})
    path.write_text(json.dumps(ROW) + "\n" + huge + "\n" + json.dumps(ROW) + "\n")
    bad = []
    tracemalloc.start()
    rows = _collect(jsonl_records(path, bad.append))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [n for n, _ in rows] == [1, 3]
    assert bad == [f"{path}: line 2 has {len(huge) + 1} bytes, over the {MAX_LINE_BYTES} read"]
    assert peak < 4 * MAX_LINE_BYTES  # the 16 MB line was never held whole


def test_json_list_and_wrapped_list(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"train": [ROW, ROW]}))
    assert json_records(path) == [(1, ROW), (2, ROW)]
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        json_records(path)


def test_field_cap():
    assert field_problem("x" * MAX_FIELD_CHARS, "haiku") is None
    assert field_problem("x" * (MAX_FIELD_CHARS + 1), "haiku") == (
        f"field 'haiku' has {MAX_FIELD_CHARS + 1} characters, over the {MAX_FIELD_CHARS} read"
    )


def test_deeply_nested_json_is_a_bad_row_not_a_recursion_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "rows.jsonl"
    path.write_text('{"topic": "snow", "haiku": "a\\nb\\nc"}\n' + deep + "\n", encoding="utf-8")
    said = []
    rows = list(jsonl_records(path, said.append))
    assert [n for n, _ in rows] == [1] and said == [f"{path}: row 2: JSON nested too deeply"]
    whole = tmp_path / "rows.json"
    whole.write_text(deep, encoding="utf-8")
    with pytest.raises(DataError, match="nested too deeply"):
        json_records(whole)
