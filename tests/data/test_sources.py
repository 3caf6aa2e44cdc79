"""loaders.py: sources -> rows (files, chat, hub folders), bad rows and missing columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from haiku_kit.data import sources as loaders
from haiku_kit.errors import DataError
from haiku_kit.verify import text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE_CSV = SHARED / "data" / "gemma_haiku" / "train_haiku.csv"

ROWS = [
    {"topic": "autumn wind", "haiku": "autumn wind at dusk\nthe scarecrow waves at no one\n"
                                      "the crows do not care"},
    {"topic": "a kettle, at dawn", "haiku": "the kettle whistles\nsteam climbs the cold kitchen "
                                            "glass\nmorning starts with tea"},
    {"topic": "snow \"day\"", "haiku": "one red glove in snow\non the fence post by the school\n"
                                       "waiting for its twin"},
]


def pairs(rows):
    return [(r["topic"], r["haiku"]) for r in rows]


# --------------------------------------------------------------------------- loaders


def test_file_loaders_round_trip(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    table = tmp_path / "rows.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["haiku", "summary"])
        writer.writeheader()
        writer.writerows({"haiku": r["haiku"], "summary": r["topic"]} for r in ROWS)
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"conversations": [
        {"role": "user", "content": text.REFERENCE_PREFIX + r["topic"] + "\n"},
        {"role": "assistant", "content": r["haiku"]}]} for r in ROWS]))

    assert pairs(loaders.load_table(jsonl)) == pairs(ROWS)
    assert pairs(loaders.load_table(table, topic_col="summary")) == pairs(ROWS)
    assert pairs(loaders.load_conversations(chat)) == pairs(ROWS)
    for path in (jsonl, table, chat):  # format and columns detected by load_source
        assert pairs(loaders.load_source(str(path))) == pairs(ROWS)
    ids = [r["source_id"] for r in loaders.load_table(jsonl)]
    assert ids == ["rows.jsonl:1", "rows.jsonl:2", "rows.jsonl:3"]


def test_reference_chat_file_loads():
    path = SHARED / "data" / "gemma_haiku" / "sft_data.json"
    if not path.is_file():
        pytest.skip(f"reference data absent: {path}")
    rows = loaders.load_conversations(path)
    assert len(rows) == 591
    assert rows[0]["topic"] == "Night's depth meets the scent of pines, distant from the ocean."
    assert rows[0]["haiku"].splitlines()[0] == "profound blue of night"


def test_chat_without_prefix_uses_whole_user_text(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"conversations": [
        {"role": "user", "content": "  a quiet pond "}, {"role": "assistant",
                                                         "content": "x / y / z"}]}) + "\n")
    assert pairs(loaders.load_conversations(chat)) == [("a quiet pond", "x\ny\nz")]


def test_load_hub_on_local_dataset_folder(tmp_path):
    import datasets

    folder = tmp_path / "haiku_hub"
    folder.mkdir()
    datasets.Dataset.from_dict({
        "keywords": ["autumn, wind", "kettle"],
        "text": [ROWS[0]["haiku"].replace("\n", " / "), ROWS[1]["haiku"]],
    }).to_parquet(str(folder / "train.parquet"))
    rows = loaders.load_hub(str(folder), "keywords", "text")
    assert pairs(rows) == [("autumn, wind", ROWS[0]["haiku"]), ("kettle", ROWS[1]["haiku"])]
    assert pairs(loaders.load_source(f"hub:{folder / 'train.parquet'}")) == pairs(rows)
    with pytest.raises(DataError, match="'summary'"):
        loaders.load_hub(str(folder), "summary", "text")


# --------------------------------------------------------------------------- bad input


def test_missing_column_names_column_and_file(tmp_path):
    table = tmp_path / "poems.csv"
    table.write_text("haiku,summary\n\"a\nb\nc\",x\n")
    with pytest.raises(DataError, match=r"'topic'.*|poems\.csv") as err:
        loaders.load_table(table)
    assert "'topic'" in str(err.value) and "poems.csv" in str(err.value)
    jsonl = tmp_path / "poems.jsonl"
    jsonl.write_text(json.dumps({"poem": "a\nb\nc", "topic": "x"}) + "\n")
    with pytest.raises(DataError) as err:
        loaders.load_table(jsonl)
    assert "'haiku'" in str(err.value) and "poems.jsonl" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        loaders.load_table(tmp_path / "nowhere.csv")


def _bad_file(tmp_path) -> Path:
    good = json.dumps(ROWS[0])
    lines = [good, good.replace("autumn", "late autumn"), "{not json", good,
             json.dumps({"topic": "no poem"}), json.dumps({"topic": 3, "haiku": "a\nb\nc"})]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_skipped_with_warning_and_count(tmp_path):
    report = loaders.FilterReport()
    with pytest.warns(loaders.BadRowWarning) as caught:
        rows = loaders.load_table(_bad_file(tmp_path), report=report)
    assert len(rows) == 3 and report.bad_rows == 3
    messages = " ".join(str(w.message) for w in caught)
    assert "row 3" in messages and "row 5" in messages and "row 6" in messages
    assert "bad rows skipped" in str(loaders.FilterReport(steps=[("loaded", 3)], bad_rows=3))


def test_bad_row_raises_with_row_number(tmp_path):
    with pytest.raises(DataError, match=r"bad\.jsonl: row 3: not valid JSON"):
        loaders.load_table(_bad_file(tmp_path), on_bad_row="raise")
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"conversations": [{"role": "user", "content": "x"}]}]))
    with pytest.raises(DataError, match="row 1: no text assistant turn"):
        loaders.load_conversations(chat, on_bad_row="raise")




def test_a_poem_holding_a_nul_byte_is_a_bad_row_naming_it(tmp_path):
    """A NUL (or other control character) in a poem was read as text and trained on."""
    path = tmp_path / "nul.jsonl"
    broken = {"topic": "snow", "haiku": "snow on\x00 the gate\nthe long road\nhome"}
    tab = {"topic": "tea", "haiku": "green tea\tcooling\nthe cup\nheld"}  # layout is kept
    path.write_text("\n".join(json.dumps(r) for r in (ROWS[0], broken, tab)) + "\n")
    report = loaders.FilterReport()
    with pytest.warns(loaders.BadRowWarning) as caught:
        rows = loaders.load_table(path, report=report)
    assert [r["topic"] for r in rows] == ["autumn wind", "tea"] and report.bad_rows == 1
    assert str(caught[0].message) == (
        f"{path}: row 2: field 'haiku' holds a control character (U+0000) at character 8 (skipped)"
    )
