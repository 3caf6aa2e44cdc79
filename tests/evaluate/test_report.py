"""haiku_kit.evaluate.report: comparison table, plots, samples and failure analysis."""

from __future__ import annotations

import csv
import io

import pytest

from haiku_kit.evaluate import report
from haiku_kit.evaluate import scoring as ev

HAIKU = "frogs sing in the pond\nthe moon floats on the water\nnight is calm and cool"
LONG_LINE2 = "frogs sing in the pond\nthe moon floats on the water tonight\nnight is calm and cool"
TWO_LINES = "frogs sing in the pond\nthe moon floats on the water"
PREAMBLE = "Here's a haiku about frogs:\n\n" + HAIKU
PROMPT = [{"role": "user", "content": "Generate a haiku about the following topic: frogs"}]


class FakeScorer:
    def __init__(self, value):
        self.value = value

    def cosine(self, topics, poems):
        return [self.value] * len(topics)


@pytest.fixture(scope="module")
def results():
    base = ev.evaluate([TWO_LINES, PREAMBLE, LONG_LINE2, ""], ["frogs"] * 4, [PROMPT] * 4,
                       scorer=FakeScorer(0.4), meta={"name": "base"})
    tuned = ev.evaluate([HAIKU, HAIKU, LONG_LINE2, HAIKU], ["frogs"] * 4, [PROMPT] * 4,
                        train_answers=[HAIKU], scorer=FakeScorer(0.8), meta={"name": "sft"})
    return {"base": base, "sft": tuned}


def test_table_has_the_reference_columns_and_values(results):
    table = report.compare(results)
    md = table.markdown()
    header = md.splitlines()[0]
    for column in ("Model", "Haiku", "Similarity", "Total", "Train overlap", "Haiku (pyphen)"):
        assert f"| {column} |" in header
    sft_row = next(line for line in md.splitlines() if line.startswith("| sft |"))
    assert "0.7500 [" in sft_row  # Haiku 3/4 with its CI
    assert "75.00% [" in sft_row  # train overlap as a percentage

    rows = list(csv.DictReader(io.StringIO(table.csv())))
    assert [r["model"] for r in rows] == ["base", "sft"]
    assert float(rows[1]["haiku"]) == pytest.approx(0.75)
    assert float(rows[1]["similarity"]) == pytest.approx(0.3)
    assert float(rows[1]["total"]) == pytest.approx(1.05)
    assert float(rows[0]["haiku"]) == pytest.approx(0.25)
    assert float(rows[0]["haiku_ci_low"]) <= 0.25 <= float(rows[0]["haiku_ci_high"])


def test_compare_needs_results():
    with pytest.raises(ValueError, match="no results"):
        report.compare({})


def test_failure_types_of_known_outputs(results):
    kinds = [report.failure_types(r) for r in results["base"].records]
    assert kinds == [["wrong line count: 2"], ["preamble"], ["line 2 off by +2"], ["empty"]]
    text = report.failure_analysis(results)
    assert "| line 2 off by +2 | 1 | 25.0% |" in text
    assert "> the moon floats on the water tonight" in text  # the example is shown


def test_write_report_writes_every_file_and_the_pngs_open(results, tmp_path):
    import matplotlib.image

    path = report.write_report(results, tmp_path / "report", samples=2)
    out = tmp_path / "report"
    assert path == out / "report.md"
    for name in ("table.md", "table.csv", "samples.md", "failures.md", "metrics.png",
                 "syllable_errors.png", "line_counts.png"):
        assert (out / name).is_file(), name
        assert name in path.read_text(), f"report.md does not link {name}"
    for name in ("metrics.png", "syllable_errors.png", "line_counts.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    samples = (out / "samples.md").read_text()
    assert samples.count("**Topic:**") == 4  # 2 per model


def test_report_shows_pass_at_k_when_k_is_above_one(tmp_path):
    result = ev.evaluate([[HAIKU, TWO_LINES], [TWO_LINES, TWO_LINES]], ["a", "b"],
                         similarity=False)
    path = report.write_report({"k2": result}, tmp_path)
    text = path.read_text()
    assert "pass@2" in text and "| k2 | 0.2500 | 0.5000 |" in text
    assert "n/a" in (tmp_path / "table.md").read_text()  # no similarity: shown as n/a


def test_samples_are_drawn_at_random_seeded_with_the_judges_verdict(results):
    many = {name: ev.evaluate([HAIKU, PREAMBLE, LONG_LINE2, TWO_LINES] * 5, [f"frogs {i}" for i in range(20)],
                              scorer=FakeScorer(0.8)) for name in ("sft", "grpo")}
    md = report.samples_markdown(many, samples=12, seed=0)
    assert md == report.samples_markdown(many, samples=12, seed=0)  # seeded
    assert md != report.samples_markdown(many, samples=12, seed=1)
    topics = [line for line in md.splitlines() if line.startswith("**Topic:**")]
    assert len(topics) == 24
    assert topics[:12] == topics[12:]  # the same prompts for every model
    assert topics[:12] != [f"**Topic:** frogs {i}  " for i in range(12)]  # not the first twelve
    assert "**good**" in md and "not good:" in md


def test_summary_and_verdict_lead_with_good(results):
    table = report.summary_table(results)
    assert table.splitlines()[0].startswith("| Model | n | Good | Haiku |")
    line = report.verdict(results, before="base", after="sft", metric="good")
    assert line.startswith("SFT vs BASE:") and "points of good" in line
