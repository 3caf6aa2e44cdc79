"""data.py: filter steps, disjoint seeded splits, bad input, embedded set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from haiku_kit.data import sources as loaders
from haiku_kit.data import splits as data
from haiku_kit.data import topics
from haiku_kit.errors import DataError
from haiku_kit.verify import text
from haiku_kit.verify.haiku import check

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


# --------------------------------------------------------------------------- embedded set


def test_embedded_set_is_strictly_valid_and_varied():
    rows = loaders.load_embedded()
    assert len(rows) >= 300
    failures = [r["haiku"] for r in rows if not check(r["haiku"], strict=True).is_haiku]
    assert failures == []
    assert len({text.normalize(r["topic"]) for r in rows}) >= 100
    assert len({data.near_key(r["haiku"]) for r in rows}) == len(rows), "duplicate poems"
    assert all(r["haiku"].count("\n") == 2 for r in rows)
    assert len({r["source_id"] for r in rows}) == len(rows)


def test_embedded_file_has_only_topic_and_haiku():
    for line in loaders.embedded_path().read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) == {"topic", "haiku"}


# --------------------------------------------------------------------------- filtering


def test_filter_stage_counts_on_fixture():
    # 10 rows: 2 four-line poems, 1 exact duplicate, 1 near duplicate (case and
    # punctuation), 1 wrong syllable count, 1 poem written with ' / ' separators.
    report = loaders.FilterReport()
    rows = data.filter_rows(loaders.load_table(FIXTURES / "filter_10.jsonl"), report=report)
    assert report.steps == [("loaded", 10), ("three_lines", 8), ("syllables", 7),
                             ("exact_dedup", 6), ("near_dedup", 5)]
    assert "three_lines" in str(report) and "5" in str(report)
    assert {r["topic"] for r in rows} == {"autumn wind", "a kettle", "a lost glove",
                                          "city rain", "a tired horse"}
    city = next(r for r in rows if r["topic"] == "city rain")
    assert city["haiku"] == ("rain on the city\nblack umbrellas bloom and close\n"
                             "the gutters run fast")


def test_whitespace_is_normalised():
    assert loaders.normalize_poem("  a   b \n\n c\td \n e ") == "a b\nc d\ne"
    assert loaders.normalize_poem("one / two  / three") == "one\ntwo\nthree"


def test_empty_after_filter_names_the_stage():
    rows = [{"topic": "x", "haiku": "one\ntwo\nthree\nfour", "source_id": "a"}]
    with pytest.raises(DataError, match="three_lines"):
        data.filter_rows(rows)
    rows = [{"topic": "x", "haiku": "the sun\nis bright\nyes", "source_id": "a"}]
    with pytest.raises(DataError, match="syllables"):
        data.build_splits(rows, None, min_similarity=None)


def test_too_few_rows_for_the_splits_is_an_error_not_an_empty_split(tmp_path):
    """A 2-row source wrote empty rl/eval splits and exited 0; training then had nothing."""
    rows = data.load_embedded()[:2]
    with pytest.raises(DataError, match=r"2 rows left after filtering: .*split got none"):
        data.build_splits(rows, tmp_path / "out", min_similarity=None)
    assert not (tmp_path / "out").exists()
    built = data.build_splits(rows, None, min_similarity=None, fractions=(1.0, 0.0, 0.0))
    assert len(built["sft"]) == 2 and len(built["eval"]) == 0  # a fraction of 0 stays allowed


# --------------------------------------------------------------------------- splits


def _split_pairs(out: Path) -> dict[str, list[str]]:
    return {name: (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            for name in data.SPLITS}


def test_splits_are_disjoint_and_complete(tmp_path):
    rows = loaders.load_embedded()
    report = loaders.FilterReport()
    dd = data.build_splits(rows, tmp_path, seed=0, min_similarity=None, report=report,
                           sources=["embedded"])
    assert set(dd) == set(data.SPLITS)
    sizes = {name: len(dd[name]) for name in data.SPLITS}
    assert sum(sizes.values()) == len(rows)
    assert all(abs(n - len(rows) / 3) <= 10 for n in sizes.values()), sizes
    poems = {name: set(dd[name]["haiku"]) for name in data.SPLITS}
    topics = {name: {text.normalize(t) for t in dd[name]["topic"]} for name in data.SPLITS}
    for a, b in (("sft", "rl"), ("sft", "eval"), ("rl", "eval")):
        assert not poems[a] & poems[b]
        assert not topics[a] & topics[b]
    assert set(dd["sft"].column_names) == {"topic", "haiku", "source_id", "prompt", "messages"}
    for name in ("rl", "eval"):
        assert set(dd[name].column_names) == {"topic", "haiku", "source_id", "prompt"}
    row = dd["sft"][0]
    assert row["prompt"] == [{"role": "user", "content": text.DEFAULT_TEMPLATE.format(
        topic=row["topic"])}]
    assert row["messages"] == row["prompt"] + [{"role": "assistant", "content": row["haiku"]}]

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["splits"] == sizes
    assert manifest["phases"]["loaded"] == len(rows)
    assert manifest["sources"][0]["sha256"] == data.sha256_file(loaders.embedded_path())
    loaded = data.load_splits(tmp_path)
    assert {n: len(loaded[n]) for n in data.SPLITS} == sizes
    assert len(_split_pairs(tmp_path)["rl"]) == sizes["rl"]


def test_splits_are_stable_for_a_seed(tmp_path):
    rows = loaders.load_embedded()
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        data.build_splits(rows, tmp_path / name, seed=seed, min_similarity=None)
    assert _split_pairs(tmp_path / "a") == _split_pairs(tmp_path / "b")
    assert _split_pairs(tmp_path / "a") != _split_pairs(tmp_path / "c")


def test_fractions_and_max_rows():
    rows = loaders.load_embedded()
    dd = data.build_splits(rows, None, fractions=(0.6, 0.2, 0.2), min_similarity=None)
    assert len(dd["sft"]) > 2 * len(dd["rl"]) - 10
    dd = data.build_splits(rows, None, fractions=(1, 1, 0), min_similarity=None, max_rows=60)
    assert len(dd["eval"]) == 0 and len(dd["sft"]) + len(dd["rl"]) == 60
    with pytest.raises(DataError, match="fractions"):
        data.build_splits(rows, None, fractions=(1, -1, 1), min_similarity=None)


def test_build_prompt():
    assert text.build_prompt("rain") == [
        {"role": "user", "content": "Generate a haiku about the following topic: rain"}]
    merged = text.build_prompt("rain", "Topic: {topic}", system="Answer with only the poem.")
    assert merged == [{"role": "user", "content": "Answer with only the poem.\n\nTopic: rain"}]
    with pytest.raises(DataError, match="template"):
        text.build_prompt("rain", "about {subject}")


def test_topic_fn_fills_missing_topics(tmp_path):
    path = tmp_path / "poems.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["poem"])
        writer.writerows([[r["haiku"]] for r in ROWS])
    rows = loaders.load_source(str(path))
    assert [r["topic"] for r in rows] == ["", "", ""]
    dd = data.build_splits(rows, None, fractions=(1, 0, 0), min_similarity=None,
                           topic_fn=lambda poem: poem.split()[0] + " poem")
    assert sorted(dd["sft"]["topic"]) == ["autumn poem", "one poem", "the poem"]


def test_keyphrase_candidates_skip_stopword_edges():
    found = topics.keyphrase_candidates("the old pond\na frog jumps in")
    assert "old pond" in found and "frog jumps" in found
    assert not any(c.split()[0] in ("the", "a") or c.split()[-1] == "in" for c in found)


def test_load_splits_on_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="not a splits folder"):
        data.load_splits(tmp_path)


# --------------------------------------------------------------------------- eval rows and a run's data


def test_load_eval_data_reads_the_reference_chat_json(shared_dir):
    path = shared_dir / "data/gemma_haiku/eval_data.json"
    rows, train = data.load_eval_data(str(path), str(shared_dir / "data/gemma_haiku/sft_data.json"))
    assert len(rows) == 592 and len(train) == 591
    assert rows[0]["topic"] == "A lament for Mac Miller's final album and his passing."
    assert rows[0]["prompt"][0]["content"].endswith("passing.\n")  # verbatim, as the reference


def test_load_eval_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        data.load_eval_data(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "ok"}\n{"title": "no topic"}\n')
    with pytest.raises(DataError, match="line 2"):
        data.load_eval_data(str(bad))


def test_missing_splits_dir_is_named(tmp_path):
    from haiku_kit.config import load_preset

    cfg = load_preset("cpu-smoke", [f"output_dir={tmp_path}", f"data.splits_dir={tmp_path / 'none'}"])
    with pytest.raises(DataError, match="splits_dir"):
        data.load_run_data(cfg)


def test_load_splits_error_names_the_folder(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_splits(tmp_path)
    assert f"--out {tmp_path}`" in str(err.value)  # the folder itself, not a placeholder


# --------------------------------------------------------------------------- real MiniLM


@pytest.mark.slow
def test_similarity_filter_and_derived_topics_with_minilm(tmp_path):
    report = loaders.FilterReport()
    dd = data.build_splits(loaders.load_embedded(), tmp_path, min_similarity=0.5, report=report)
    kept = report.count("similarity")
    print(f"\nembedded set: {kept}/{report.count('topic')} rows have cos(topic, poem) >= 0.5")
    assert 0 < kept <= report.count("topic")
    assert sum(len(s) for s in dd.values()) == kept
    derived = topics.derive_topics([ROWS[0]["haiku"], ROWS[1]["haiku"]])
    assert all(t in topics.keyphrase_candidates(p["haiku"]) for t, p in zip(derived, ROWS))
    print("derived topics:", derived)


@pytest.mark.slow
def test_reference_csv_pass_rate(tmp_path):
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"reference data absent: {REFERENCE_CSV}")
    rows = loaders.load_source(str(REFERENCE_CSV))
    assert len(rows) == 1774
    report = loaders.FilterReport()
    dd = data.build_splits(rows, tmp_path, min_similarity=0.5, report=report,
                           sources=[str(REFERENCE_CSV)])
    print(f"\nreference train_haiku.csv (pyphen-filtered):\n{report}")
    kept = report.count("syllables")
    print(f"verifier keeps {kept}/{report.count('three_lines')} 3-line rows "
          f"({kept / report.count('three_lines'):.1%})")
    assert 0.90 * 1774 <= kept <= 1774
    assert report.count("similarity") > 0.3 * 1774
    assert sum(len(s) for s in dd.values()) == report.count("similarity")
