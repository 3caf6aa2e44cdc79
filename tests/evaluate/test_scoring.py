"""evaluate.py and metrics.py: metric definitions, CIs, pass@k, save/load, references."""

from __future__ import annotations

import csv
import json
import math
from itertools import combinations

import numpy as np
import pytest

from haiku_kit.data.splits import load_eval_data
from haiku_kit.errors import DataError
from haiku_kit.evaluate import metrics
from haiku_kit.evaluate import scoring as ev

PROMPT = [{"role": "user", "content": "Generate a haiku about the following topic: frogs"}]
HAIKU_A = "frogs sing in the pond\nthe moon floats on the water\nnight is calm and cool"
HAIKU_B = "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake"
TWO_LINES = "frogs sing in the pond\nthe moon floats on the water"
COPY = "Generate a haiku about the following topic: frogs"
PREAMBLE = "Here's a haiku about frogs:\n\n" + HAIKU_B

# completion -> cosine the fake scorer returns
COSINES = {HAIKU_A: 0.9, "Here's a haiku about frogs:\n\n" + HAIKU_B: 0.6, TWO_LINES: 0.7,
           COPY: 0.8, "": 0.0, HAIKU_B: 0.3}  # the judge scores the extracted poem alone


class FakeScorer:
    def __init__(self):
        self.calls = []

    def cosine(self, topics, poems):
        self.calls.append((list(topics), list(poems)))
        return [COSINES[p] for p in poems]


def _result(**kwargs):
    completions = [HAIKU_A, PREAMBLE, TWO_LINES, COPY, ""]
    return ev.evaluate(completions, ["frogs"] * 5, [PROMPT] * 5,
                       train_answers=[HAIKU_A + "\n", "something else"],
                       scorer=FakeScorer(), **kwargs)


def test_metric_definitions_on_known_outputs():
    result = _result()
    m = result.metrics
    # haiku: HAIKU_A and the extracted poem of PREAMBLE -> 2 of 5
    assert m["haiku"] == pytest.approx(2 / 5)
    assert [r["is_haiku"] for r in result.records] == [True, True, False, False, False]
    # the reference's pyphen counter judges the raw output: the preamble makes it fail
    assert m["pyphen_haiku"] == pytest.approx(1 / 5)
    assert m["haiku_raw"] == pytest.approx(1 / 5)
    sims = [0.9 - 0.5, 0.6 - 0.5, 0.7 - 0.5, 0.8 - 0.5, 0.0 - 0.5]
    assert m["similarity"] == pytest.approx(np.mean(sims))
    assert m["total"] == pytest.approx(2 / 5 + np.mean(sims))
    assert m["total"] == pytest.approx(m["haiku"] + m["similarity"])
    assert m["pyphen_total"] == pytest.approx(m["pyphen_haiku"] + m["similarity"])
    # exact overlap compares stripped texts: HAIKU_A is in train with a trailing newline
    assert m["train_overlap"] == pytest.approx(1 / 5)
    assert m["preamble"] == pytest.approx(1 / 5)
    assert m["prompt_copy"] == pytest.approx(1 / 5)
    assert result.records[3]["prompt_copy"] and result.records[3]["copy_fraction"] == 1.0
    assert m["empty"] == pytest.approx(1 / 5)
    assert m["three_lines"] == pytest.approx(2 / 5)
    assert result.distributions["line_counts"] == {"0": 1, "1": 1, "2": 1, "3": 2}
    assert m["words"] == pytest.approx(np.mean([len(c.split()) for c in
                                                [HAIKU_A, PREAMBLE, TWO_LINES, COPY, ""]]))
    # every rate has a CI containing it
    for key, value in m.items():
        lo, hi = result.ci[key]
        assert lo - 1e-9 <= value <= hi + 1e-9, key


def test_similarity_is_scored_on_the_raw_output_against_the_topic():
    scorer = FakeScorer()
    ev.evaluate([PREAMBLE], ["frogs"], scorer=scorer)
    # the reference's Similarity reads the raw output; the judge's "on topic" the poem alone
    assert scorer.calls == [(["frogs"], [PREAMBLE]), (["frogs"], [HAIKU_B])]


def test_good_is_valid_fluent_on_topic_and_original_each_part_reported():
    result = _result()
    rows = result.records
    # HAIKU_A: valid, fluent, poem cosine 0.9 -> good; PREAMBLE's poem (HAIKU_B) is valid and
    # fluent but its poem scores 0.3 against "frogs" -> off topic; the rest are not valid.
    assert [r["good"] for r in rows] == [True, False, False, False, False]
    assert [r["on_topic"] for r in rows][:2] == [True, False]
    assert any("off topic" in x for x in rows[1]["judge_reasons"])
    assert result.metrics["good"] == pytest.approx(1 / 5)
    assert result.metrics["good"] <= result.metrics["haiku"]
    for part in ("fluent", "on_topic", "original"):
        assert part in result.metrics and len(result.ci[part]) == 2


def test_filler_is_valid_but_not_good():
    filler = "the lot of the park\nthe moon is high in the air\nand then it goes, then"
    scorer = FakeScorer()
    COSINES[filler] = 0.9
    result = ev.evaluate([filler], ["a park at night"], scorer=scorer)
    [r] = result.records
    assert r["is_haiku"] and not r["good"] and not r["fluent"] and r["on_topic"]
    assert any("then" in x for x in r["judge_reasons"])


def test_rejudge_applies_todays_judge_to_saved_outputs(tmp_path, monkeypatch):
    """A result saved before a judge change, judged again: its stored cosines reused (no
    MiniLM), the verdicts and metrics recomputed, the outputs untouched."""
    cut = "frogs in the green pond\nthe moon on the firefly's\nnight is calm and cool"
    COSINES[cut] = 0.9
    saved = ev.EvalResult.load(ev.evaluate([HAIKU_A, cut], ["frogs"] * 2, [PROMPT] * 2,
                                           scorer=FakeScorer()).save(tmp_path / "new"))
    assert [r["good"] for r in saved.records] == [True, False]
    # as an older judge (without the no_noun rule) saved it
    old = saved.records[1]
    old.update(good=True, fluent=True, judge_reasons=[])
    saved.metrics["good"] = 1.0

    def no_minilm():
        raise AssertionError("rejudge ran MiniLM although the records keep their cosines")

    monkeypatch.setattr("haiku_kit.verify.similarity.get_scorer", no_minilm)
    again = ev.rejudge(saved, note="abc123")
    assert [r["good"] for r in again.records] == [True, False]
    assert again.records[1]["judge_reasons"] == [
        "line 2 ends on the possessive 'firefly's', owning nothing"]
    assert again.metrics["good"] == pytest.approx(0.5) and again.metrics["fluent"] == pytest.approx(0.5)
    assert again.meta["rejudged"] == "abc123" and again.metrics["haiku"] == saved.metrics["haiku"]
    assert [r["completion"] for r in again.records] == [HAIKU_A, cut]
    assert saved.records[1]["good"] is True  # the loaded result is not changed in place


def test_similarity_off_gives_nan_and_keeps_the_rest():
    result = _result(similarity=False)
    assert math.isnan(result.metrics["similarity"]) and math.isnan(result.metrics["total"])
    assert result.metrics["haiku"] == pytest.approx(2 / 5)
    assert "good" not in result.metrics  # on topic cannot be judged without similarity


def test_near_duplicate_overlap_catches_case_and_punctuation_changes():
    train = ["Frogs sing in the pond,\nthe moon floats on the water.\nNight is calm and cool!"]
    close = "frogs sing in the pond\nthe moon floats on water\nnight is calm and cool"
    result = ev.evaluate([HAIKU_A, HAIKU_B, close], ["frogs"] * 3, train_answers=train,
                         similarity=False)
    assert [r["train_overlap"] for r in result.records] == [False, False, False]
    assert [r["train_near"] for r in result.records] == [True, False, True]


def test_per_line_error_histogram():
    long_second = "frogs sing in the pond\nthe moon floats on the water tonight\nnight is calm and cool"
    result = ev.evaluate([HAIKU_A, long_second], ["frogs"] * 2, similarity=False)
    assert result.records[1]["line_errors"] == [0, 2, 0]
    assert result.distributions["line_errors"]["line2"] == {"0": 1, "2": 1}
    assert result.metrics["distance"] == pytest.approx(1.0)


def test_pyphen_counter_matches_the_reference_definition():
    # hyphenation pieces per word, blank lines dropped, exactly 3 lines
    assert metrics.pyphen_counts("An old silent pond\n\nA frog jumps into the pond") == [5, 7]
    assert not metrics.pyphen_is_haiku(HAIKU_A + "\nextra line")
    assert metrics.pyphen_is_haiku("  " + HAIKU_A + "\n\n")


def test_pyphen_counter_passes_the_reference_filtered_train_set(shared_dir):
    # train_haiku.csv was filtered by the reference with pyphen 5-7-5: all rows must pass.
    with open(shared_dir / "data/gemma_haiku/train_haiku.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    failing = [r["haiku"] for r in rows if not metrics.pyphen_is_haiku(r["haiku"])]
    assert not failing, failing[:3]


def test_cis_narrow_as_n_grows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        x = rng.random(n) < 0.3
        lo, hi = metrics.bootstrap_ci(x, seed=0)
        assert lo <= x.mean() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_is_seeded_and_resamples_prompts():
    x = [1, 1, 0, 0, 1, 0]
    assert metrics.bootstrap_ci(x, seed=3) == metrics.bootstrap_ci(x, seed=3)
    # identical samples within a prompt: grouping must not shrink the interval below the
    # interval of the per-prompt means
    grouped = metrics.bootstrap_ci([1, 1, 1, 0, 0, 0], groups=[0, 0, 0, 1, 1, 1], seed=0)
    assert grouped == metrics.bootstrap_ci([1, 0], seed=0)


def _brute_pass_at_k(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (4, 1, 1), (4, 1, 2), (8, 2, 4),
                                   (8, 0, 8), (8, 1, 8), (5, 3, 3)])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k))


def test_pass_at_k_and_best_of_k_with_k_samples():
    # prompt 0: 1 valid of 4; prompt 1: none valid
    groups = [[HAIKU_A, TWO_LINES, TWO_LINES, TWO_LINES], [TWO_LINES] * 4]
    result = ev.evaluate(groups, ["frogs", "moon"], similarity=False)
    assert result.meta["k"] == 4 and len(result.records) == 8
    assert result.pass_at_k == pytest.approx({1: 0.125, 2: 0.25, 4: 0.5})
    assert metrics.best_of_k_rate(result, 1) == pytest.approx(result.metrics["haiku"])
    assert metrics.best_of_k_rate(result, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pass@8"):
        metrics.best_of_k_rate(result, 8)
    # best of k by another part of the verdict: prompt 0 has 2 good of 4, prompt 1 none
    records = [{"prompt_index": p, "is_haiku": True, "good": g}
               for p, g in ((0, True), (0, True), (0, False), (0, False), *[(1, False)] * 4)]
    assert metrics.best_of_k_rate(records, 1, key="good") == pytest.approx(0.25)
    assert metrics.best_of_k_rate(records, 2, key="good") == pytest.approx((1 - 1 / 6) / 2)
    assert metrics.best_of_k_rate(records, 4) == pytest.approx(1.0)


def test_save_and_load_round_trip(tmp_path):
    result = _result()
    result.save(tmp_path / "run")
    lines = (tmp_path / "run" / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[1])["completion"] == PREAMBLE
    loaded = ev.EvalResult.load(tmp_path / "run")
    assert loaded.metrics == pytest.approx(result.metrics)
    assert loaded.records == json.loads(json.dumps(result.records))
    assert loaded.pass_at_k == result.pass_at_k
    with pytest.raises(FileNotFoundError, match="result.json"):
        ev.EvalResult.load(tmp_path)


def test_bad_input_names_the_problem():
    with pytest.raises(DataError, match="2 completions/groups for 1 topics"):
        ev.evaluate(["a", "b"], ["t"], similarity=False)
    with pytest.raises(DataError, match="completion 1"):
        ev.evaluate(["a", 3], ["t", "u"], similarity=False)
    with pytest.raises(DataError, match="row 0"):
        ev.evaluate_references([{"topic": "x"}], similarity=False)


def test_evaluate_references_on_the_embedded_set_scores_haiku_one():
    from haiku_kit.data.splits import load_embedded

    result = ev.evaluate_references(load_embedded(), similarity=False)
    assert result.metrics["haiku"] == 1.0
    assert result.metrics["three_lines"] == 1.0
    assert result.metrics["train_overlap"] == 0.0


# --------------------------------------------------------------------------- real models


@pytest.mark.slow
def test_similarity_matches_similarity_cosine():
    from haiku_kit.verify.similarity import cosine

    result = ev.evaluate([HAIKU_A, PREAMBLE], ["frogs at night", "rain on a shed"])
    expected = cosine(["frogs at night", "rain on a shed"], [HAIKU_A, PREAMBLE])
    assert [r["similarity"] for r in result.records] == pytest.approx([c - 0.5 for c in expected])
    assert result.metrics["total"] == pytest.approx(
        result.metrics["haiku"] + result.metrics["similarity"])


@pytest.mark.slow
def test_evaluate_references_with_minilm():
    from haiku_kit.data.splits import load_embedded

    rows = load_embedded()[:40]
    result = ev.evaluate_references(rows)
    assert result.metrics["haiku"] == 1.0
    assert result.metrics["similarity"] > 0.0  # the bundled topics describe their poems


def test_a_raw_haiku_is_not_failed_by_the_extraction_heuristics():
    # a real reference answer whose first line looks like a preamble ("of course ...")
    text = "of course my parents\n are fighting on christmas why\nam i not surprised"
    record = ev.evaluate([text], ["family"], similarity=False).records[0]
    assert record["is_haiku"] and record["lines"] == 3
    assert record["poem"].splitlines() == [line.strip() for line in text.splitlines()]


def test_evaluate_references_on_the_reference_eval_set(shared_dir):
    folder = shared_dir / "data/gemma_haiku"
    rows, train = load_eval_data(str(folder / "eval_data.json"), str(folder / "sft_data.json"))
    result = ev.evaluate_references(rows, train_answers=train, similarity=False)
    assert result.metrics["pyphen_haiku"] == 1.0  # the reference filtered them with pyphen
    assert result.metrics["haiku"] >= 0.99  # our verifier disagrees on very few
    assert result.metrics["train_overlap"] == 0.0  # the reference's "train overlap 0%"
