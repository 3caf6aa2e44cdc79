"""haiku_kit.data: loaders, filter stages, disjoint seeded splits, bad input, embedded set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from haiku_kit import data
from haiku_kit.errors import DataError
from haiku_kit.haiku import check

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
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


# --------------------------------------------------------------------------- embedded set


def test_embedded_set_is_strictly_valid_and_varied():
    rows = data.load_embedded()
    assert len(rows) >= 300
    failures = [r["haiku"] for r in rows if not check(r["haiku"], strict=True).is_haiku]
    assert failures == []
    assert len({data.normalize_topic(r["topic"]) for r in rows}) >= 100
    assert len({data.near_key(r["haiku"]) for r in rows}) == len(rows), "duplicate poems"
    assert all(r["haiku"].count("\n") == 2 for r in rows)
    assert len({r["source_id"] for r in rows}) == len(rows)


def test_embedded_file_has_only_topic_and_haiku():
    for line in data.embedded_path().read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) == {"topic", "haiku"}


# --------------------------------------------------------------------------- filtering


def test_filter_stage_counts_on_fixture():
    # 10 rows: 2 four-line poems, 1 exact duplicate, 1 near duplicate (case and
    # punctuation), 1 wrong syllable count, 1 poem written with ' / ' separators.
    report = data.FilterReport()
    rows = data.filter_rows(data.load_table(FIXTURES / "filter_10.jsonl"), report=report)
    assert report.stages == [("loaded", 10), ("three_lines", 8), ("syllables", 7),
                             ("exact_dedup", 6), ("near_dedup", 5)]
    assert "three_lines" in str(report) and "5" in str(report)
    assert {r["topic"] for r in rows} == {"autumn wind", "a kettle", "a lost glove",
                                          "city rain", "a tired horse"}
    city = next(r for r in rows if r["topic"] == "city rain")
    assert city["haiku"] == ("rain on the city\nblack umbrellas bloom and close\n"
                             "the gutters run fast")


def test_whitespace_is_normalised():
    assert data.normalize_poem("  a   b \n\n c\td \n e ") == "a b\nc d\ne"
    assert data.normalize_poem("one / two  / three") == "one\ntwo\nthree"


def test_empty_after_filter_names_the_stage():
    rows = [{"topic": "x", "haiku": "one\ntwo\nthree\nfour", "source_id": "a"}]
    with pytest.raises(DataError, match="three_lines"):
        data.filter_rows(rows)
    rows = [{"topic": "x", "haiku": "the sun\nis bright\nyes", "source_id": "a"}]
    with pytest.raises(DataError, match="syllables"):
        data.build_splits(rows, None, min_similarity=None)


# --------------------------------------------------------------------------- splits


def _split_pairs(out: Path) -> dict[str, list[str]]:
    return {name: (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            for name in data.SPLITS}


def test_splits_are_disjoint_and_complete(tmp_path):
    rows = data.load_embedded()
    report = data.FilterReport()
    dd = data.build_splits(rows, tmp_path, seed=0, min_similarity=None, report=report,
                           sources=["embedded"])
    assert set(dd) == set(data.SPLITS)
    sizes = {name: len(dd[name]) for name in data.SPLITS}
    assert sum(sizes.values()) == len(rows)
    assert all(abs(n - len(rows) / 3) <= 10 for n in sizes.values()), sizes
    poems = {name: set(dd[name]["haiku"]) for name in data.SPLITS}
    topics = {name: {data.normalize_topic(t) for t in dd[name]["topic"]} for name in data.SPLITS}
    for a, b in (("sft", "rl"), ("sft", "eval"), ("rl", "eval")):
        assert not poems[a] & poems[b]
        assert not topics[a] & topics[b]
    assert set(dd["sft"].column_names) == {"topic", "haiku", "source_id", "prompt", "messages"}
    for name in ("rl", "eval"):
        assert set(dd[name].column_names) == {"topic", "haiku", "source_id", "prompt"}
    row = dd["sft"][0]
    assert row["prompt"] == [{"role": "user", "content": data.DEFAULT_TEMPLATE.format(
        topic=row["topic"])}]
    assert row["messages"] == row["prompt"] + [{"role": "assistant", "content": row["haiku"]}]

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["splits"] == sizes
    assert manifest["stages"]["loaded"] == len(rows)
    assert manifest["sources"][0]["sha256"] == data.sha256_file(data.embedded_path())
    loaded = data.load_splits(tmp_path)
    assert {n: len(loaded[n]) for n in data.SPLITS} == sizes
    assert len(_split_pairs(tmp_path)["rl"]) == sizes["rl"]


def test_splits_are_stable_for_a_seed(tmp_path):
    rows = data.load_embedded()
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        data.build_splits(rows, tmp_path / name, seed=seed, min_similarity=None)
    assert _split_pairs(tmp_path / "a") == _split_pairs(tmp_path / "b")
    assert _split_pairs(tmp_path / "a") != _split_pairs(tmp_path / "c")


def test_fractions_and_max_rows():
    rows = data.load_embedded()
    dd = data.build_splits(rows, None, fractions=(0.6, 0.2, 0.2), min_similarity=None)
    assert len(dd["sft"]) > 2 * len(dd["rl"]) - 10
    dd = data.build_splits(rows, None, fractions=(1, 1, 0), min_similarity=None, max_rows=60)
    assert len(dd["eval"]) == 0 and len(dd["sft"]) + len(dd["rl"]) == 60
    with pytest.raises(DataError, match="fractions"):
        data.build_splits(rows, None, fractions=(1, -1, 1), min_similarity=None)


def test_build_prompt():
    assert data.build_prompt("rain") == [
        {"role": "user", "content": "Generate a haiku about the following topic: rain"}]
    merged = data.build_prompt("rain", "Topic: {topic}", system="Answer with only the poem.")
    assert merged == [{"role": "user", "content": "Answer with only the poem.\n\nTopic: rain"}]
    with pytest.raises(DataError, match="template"):
        data.build_prompt("rain", "about {subject}")


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
        {"role": "user", "content": data.REFERENCE_PREFIX + r["topic"] + "\n"},
        {"role": "assistant", "content": r["haiku"]}]} for r in ROWS]))

    assert pairs(data.load_table(jsonl)) == pairs(ROWS)
    assert pairs(data.load_table(table, topic_col="summary")) == pairs(ROWS)
    assert pairs(data.load_conversations(chat)) == pairs(ROWS)
    for path in (jsonl, table, chat):  # format and columns detected by load_source
        assert pairs(data.load_source(str(path))) == pairs(ROWS)
    ids = [r["source_id"] for r in data.load_table(jsonl)]
    assert ids == ["rows.jsonl:1", "rows.jsonl:2", "rows.jsonl:3"]


def test_reference_chat_file_loads():
    path = SHARED / "data" / "gemma_haiku" / "sft_data.json"
    if not path.is_file():
        pytest.skip(f"reference data absent: {path}")
    rows = data.load_conversations(path)
    assert len(rows) == 591
    assert rows[0]["topic"] == "Night's depth meets the scent of pines, distant from the ocean."
    assert rows[0]["haiku"].splitlines()[0] == "profound blue of night"


def test_chat_without_prefix_uses_whole_user_text(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"conversations": [
        {"role": "user", "content": "  a quiet pond "}, {"role": "assistant",
                                                         "content": "x / y / z"}]}) + "\n")
    assert pairs(data.load_conversations(chat)) == [("a quiet pond", "x\ny\nz")]


def test_load_hub_on_local_dataset_folder(tmp_path):
    import datasets

    folder = tmp_path / "haiku_hub"
    folder.mkdir()
    datasets.Dataset.from_dict({
        "keywords": ["autumn, wind", "kettle"],
        "text": [ROWS[0]["haiku"].replace("\n", " / "), ROWS[1]["haiku"]],
    }).to_parquet(str(folder / "train.parquet"))
    rows = data.load_hub(str(folder), "keywords", "text")
    assert pairs(rows) == [("autumn, wind", ROWS[0]["haiku"]), ("kettle", ROWS[1]["haiku"])]
    assert pairs(data.load_source(f"hub:{folder / 'train.parquet'}")) == pairs(rows)
    with pytest.raises(DataError, match="'summary'"):
        data.load_hub(str(folder), "summary", "text")


def test_topic_fn_fills_missing_topics(tmp_path):
    path = tmp_path / "poems.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["poem"])
        writer.writerows([[r["haiku"]] for r in ROWS])
    rows = data.load_source(str(path))
    assert [r["topic"] for r in rows] == ["", "", ""]
    dd = data.build_splits(rows, None, fractions=(1, 0, 0), min_similarity=None,
                           topic_fn=lambda poem: poem.split()[0] + " poem")
    assert sorted(dd["sft"]["topic"]) == ["autumn poem", "one poem", "the poem"]


def test_keyphrase_candidates_skip_stopword_edges():
    found = data.keyphrase_candidates("the old pond\na frog jumps in")
    assert "old pond" in found and "frog jumps" in found
    assert not any(c.split()[0] in ("the", "a") or c.split()[-1] == "in" for c in found)


# --------------------------------------------------------------------------- bad input


def test_missing_column_names_column_and_file(tmp_path):
    table = tmp_path / "poems.csv"
    table.write_text("haiku,summary\n\"a\nb\nc\",x\n")
    with pytest.raises(DataError, match=r"'topic'.*|poems\.csv") as err:
        data.load_table(table)
    assert "'topic'" in str(err.value) and "poems.csv" in str(err.value)
    jsonl = tmp_path / "poems.jsonl"
    jsonl.write_text(json.dumps({"poem": "a\nb\nc", "topic": "x"}) + "\n")
    with pytest.raises(DataError) as err:
        data.load_table(jsonl)
    assert "'haiku'" in str(err.value) and "poems.jsonl" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        data.load_table(tmp_path / "nowhere.csv")


def _bad_file(tmp_path) -> Path:
    good = json.dumps(ROWS[0])
    lines = [good, good.replace("autumn", "late autumn"), "{not json", good,
             json.dumps({"topic": "no poem"}), json.dumps({"topic": 3, "haiku": "a\nb\nc"})]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_skipped_with_warning_and_count(tmp_path):
    report = data.FilterReport()
    with pytest.warns(data.BadRowWarning) as caught:
        rows = data.load_table(_bad_file(tmp_path), report=report)
    assert len(rows) == 3 and report.bad_rows == 3
    messages = " ".join(str(w.message) for w in caught)
    assert "row 3" in messages and "row 5" in messages and "row 6" in messages
    assert "bad rows skipped" in str(data.FilterReport(stages=[("loaded", 3)], bad_rows=3))


def test_bad_row_raises_with_row_number(tmp_path):
    with pytest.raises(DataError, match=r"bad\.jsonl: row 3: not valid JSON"):
        data.load_table(_bad_file(tmp_path), on_bad_row="raise")
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"conversations": [{"role": "user", "content": "x"}]}]))
    with pytest.raises(DataError, match="row 1: no text assistant turn"):
        data.load_conversations(chat, on_bad_row="raise")


def test_load_splits_on_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="not a splits folder"):
        data.load_splits(tmp_path)


# --------------------------------------------------------------------------- CLI


def test_cli_data_build_prints_stage_counts(tmp_path, capsys):
    from haiku_kit.cli import main

    out = tmp_path / "splits"
    assert main(["data", "build", "--source", str(FIXTURES / "filter_10.jsonl"), "--out",
                 str(out), "--min-similarity", "none", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "near_dedup" in printed and "loaded" in printed and "10" in printed
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3
    assert main(["data", "build", "--source", str(tmp_path / "missing.jsonl"),
                 "--out", str(out)]) == 2


# --------------------------------------------------------------------------- real MiniLM


@pytest.mark.slow
def test_similarity_filter_and_derived_topics_with_minilm(tmp_path):
    report = data.FilterReport()
    dd = data.build_splits(data.load_embedded(), tmp_path, min_similarity=0.5, report=report)
    kept = report.count("similarity")
    print(f"\nembedded set: {kept}/{report.count('topic')} rows have cos(topic, poem) >= 0.5")
    assert 0 < kept <= report.count("topic")
    assert sum(len(s) for s in dd.values()) == kept
    topics = data.derive_topics([ROWS[0]["haiku"], ROWS[1]["haiku"]])
    assert all(t in data.keyphrase_candidates(p["haiku"]) for t, p in zip(topics, ROWS))
    print("derived topics:", topics)


@pytest.mark.slow
def test_reference_csv_pass_rate(tmp_path):
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"reference data absent: {REFERENCE_CSV}")
    rows = data.load_source(str(REFERENCE_CSV))
    assert len(rows) == 1774
    report = data.FilterReport()
    dd = data.build_splits(rows, tmp_path, min_similarity=0.5, report=report,
                           sources=[str(REFERENCE_CSV)])
    print(f"\nreference train_haiku.csv (pyphen-filtered):\n{report}")
    kept = report.count("syllables")
    print(f"verifier keeps {kept}/{report.count('three_lines')} 3-line rows "
          f"({kept / report.count('three_lines'):.1%})")
    assert 0.90 * 1774 <= kept <= 1774
    assert report.count("similarity") > 0.3 * 1774
    assert sum(len(s) for s in dd.values()) == report.count("similarity")
