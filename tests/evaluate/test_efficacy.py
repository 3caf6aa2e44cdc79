"""Issue 14's pieces: the per-line exact reward, the GRPO learning curve and verdict in the
report, and eval topics that never meet a training topic, near-duplicates included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from haiku_kit.config import load_preset
from haiku_kit.data import splits as data
from haiku_kit.data import topics
from haiku_kit.data.sources import load_embedded, load_topic_list
from haiku_kit.data.splits import load_eval_data
from haiku_kit.evaluate import report
from haiku_kit.evaluate.report import learning_curve
from haiku_kit.evaluate.scoring import evaluate, paired_difference
from haiku_kit.train import rewards
from haiku_kit.verify.similarity import get_scorer
from haiku_kit.verify.text import normalize

HAIKU = "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake"
TWO_EXACT = "autumn rain taps slow\non the roof of the old tool shed\nrust blooms on the rake"
REF_EVAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "gemma_haiku" / "eval_data.json"


# --------------------------------------------------------------------------- reward


def test_line_exact_reward_counts_exact_lines():
    scores = rewards.line_exact_reward(None, [HAIKU, TWO_EXACT, "one line only", ""])
    assert scores == [1.0, pytest.approx(2 / 3), 0.0, 0.0]


def test_counting_preset_names_the_line_reward_and_the_demo_uses_it():
    spec = rewards.RewardSpec.preset("counting")
    assert "line_exact_reward" in spec.names and "haiku_reward" in spec.names
    assert load_preset("cpu-demo").grpo.rewards == "counting"


def test_topical_preset_is_counting_plus_dense_similarity_and_the_full_run_uses_it():
    counting, topical = rewards.RewardSpec.preset("counting"), rewards.RewardSpec.preset("topical")
    assert topical.names[: len(counting.names)] == counting.names
    assert topical.reward_weights()[: len(counting.names)] == counting.reward_weights()
    assert topical.weight_of("similarity_reward") == 1.0
    assert load_preset("cpu-full").grpo.rewards == "topical"


# --------------------------------------------------------------------------- report


def _samples(tmp_path: Path) -> Path:
    path = tmp_path / "samples.jsonl"
    rows = [{"step": 1, "completion": "a\nb"}, {"step": 1, "completion": HAIKU},
            {"step": 2, "completion": HAIKU}, {"step": 2, "completion": TWO_EXACT}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "compl', encoding="utf-8")
    return path


def test_learning_curve_judges_each_steps_rollouts(tmp_path):
    curve = learning_curve(_samples(tmp_path))  # the torn last line is skipped
    assert [c["step"] for c in curve] == [1, 2]
    assert curve[0]["valid"] == 0.5 and curve[1]["valid"] == 0.5
    assert curve[1]["distance"] == 0.5 and curve[0]["distance"] > 5  # "a\nb" misses a line


def _result(texts: list[str]):
    return evaluate(texts, ["autumn rain"] * len(texts), similarity=False, n_boot=200)


def test_verdict_says_whether_cis_overlap():
    none = _result(["a\nb\nc"] * 40)
    all_ = _result([HAIKU] * 40)
    half = _result([HAIKU, "a\nb\nc"] * 20)
    assert report.verdict({"sft": none, "grpo": all_}) == (
        "GRPO vs SFT: +100.0 points of haiku, 95% CIs do not overlap; "
        "paired on the same prompts: +100.0 [+100.0, +100.0]")
    assert report.verdict({"sft": half, "grpo": half}).endswith(
        "95% CIs overlap; paired on the same prompts: +0.0 [+0.0, +0.0]")
    assert report.verdict({"sft": half}) is None
    other = evaluate([HAIKU] * 40, ["snow"] * 40, similarity=False, n_boot=200)
    assert report.verdict({"sft": none, "grpo": other}).endswith("do not overlap")  # not paired


def test_paired_difference_sees_a_gain_the_overlapping_cis_hide():
    """Half valid before; after, the same prompts stay valid and 8 of the other 20 turn valid:
    50% against 70% of 40 prompts overlap, but every changed prompt moved the same way."""
    before = _result([HAIKU, "a\nb\nc"] * 20)
    after = _result([HAIKU] * 16 + [HAIKU, "a\nb\nc"] * 12)
    assert after.metrics["haiku"] == pytest.approx(0.7)
    assert report.verdict({"sft": before, "grpo": after}).split(";")[0].endswith("CIs overlap")
    mean, low, high = paired_difference(before, after)
    assert mean == pytest.approx(0.2) and 0 < low < mean < high
    assert paired_difference(after, before)[0] == pytest.approx(-0.2)
    shorter = _result([HAIKU] * 39)
    assert paired_difference(before, shorter) is None  # not the same prompts


def test_report_shows_the_learning_curve(tmp_path):
    results = {"sft": _result(["a\nb\nc"] * 8), "grpo": _result([HAIKU] * 8)}
    md = report.write_report(results, tmp_path / "report", curve=learning_curve(_samples(tmp_path)))
    text = md.read_text()
    assert "GRPO learning curve" in text and "GRPO vs SFT" in text
    assert (tmp_path / "report" / "learning_curve.png").stat().st_size > 0


# --------------------------------------------------------------------------- topics


def _near_pairs(a: list[str], b: list[str], threshold: float = topics.NEAR_TOPIC_COSINE):
    scorer = get_scorer()
    cos = np.asarray(scorer.embed(a)) @ np.asarray(scorer.embed(b)).T
    return [(a[i], b[j], round(float(cos[i, j]), 3)) for i, j in zip(*np.nonzero(cos >= threshold))]


def test_near_topic_groups_link_near_duplicates_only():
    groups = topics.near_topic_groups(["a kite", "A kite in the wind", "a tax form", "a Kite!"])
    assert groups["a kite"] == groups["A kite in the wind"] == groups["a Kite!"]
    assert groups["a tax form"] != groups["a kite"]


@pytest.mark.parametrize("preset", ["cpu-demo", "cpu-full"])
def test_eval_split_topics_have_no_near_duplicate_in_training(preset):
    cfg = load_preset(preset)
    dd = data.build_splits(load_embedded(), None, fractions=cfg.data.fractions,
                           seed=cfg.data.seed, min_similarity=cfg.data.min_similarity)
    eval_topics = sorted(set(dd["eval"]["topic"]))
    train_topics = sorted(set(dd["sft"]["topic"]) | set(dd["rl"]["topic"])
                          | set(load_topic_list("embedded")))  # distill.extra_topics
    assert len(eval_topics) >= 64 and len(dd["eval"]) >= cfg.eval.n_prompts
    normalized = {normalize(t) for t in train_topics}
    assert not [t for t in eval_topics if normalize(t) in normalized]
    assert _near_pairs(eval_topics, train_topics) == []


@pytest.mark.skipif(not REF_EVAL.is_file(), reason="../shared (the reference eval set) is absent")
def test_reference_eval_topics_are_far_from_every_embedded_topic():
    reference = [r["topic"] for r in load_eval_data(str(REF_EVAL))[0]]
    embedded = sorted({r["topic"] for r in load_embedded()} | set(load_topic_list("embedded")))
    normalized = {normalize(t) for t in embedded}
    assert not [t for t in reference if normalize(t) in normalized]
    assert _near_pairs(reference, embedded) == []


# --------------------------------------------------------------------------- hand-written poems

EXPERIMENTS = Path(__file__).resolve().parents[2] / "research" / "experiments"


def _hand_written(name: str) -> list[str]:
    lines = (EXPERIMENTS / name).read_text(encoding="utf-8").splitlines()
    return ["\n".join(part.strip() for part in line.split(" / ")) for line in lines if line.strip()]


def _not_one_syllable(poem: str) -> list[str]:
    from haiku_kit.verify.syllables import counts

    return [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", poem) if 1 not in counts(w)]


@pytest.mark.parametrize("name, one_syllable, rows", [
    ("oracle_one_syllable.txt", True, 128), ("oracle_free_words.txt", False, 64)])
def test_the_hand_written_ceiling_poems_are_verified_haiku(name, one_syllable, rows):
    """research/log.md O1: Similarity's ceiling is measured on these, so each must pass the
    kit's verifier, and every word of the one-syllable file must have one syllable."""
    from haiku_kit.verify.haiku import check

    poems = _hand_written(name)
    assert len(poems) == rows
    assert [p for p in poems if not check(p).is_haiku] == []
    if one_syllable:
        assert [p for p in poems if _not_one_syllable(p)] == []


def test_the_hand_written_training_corpus_is_verified_and_far_from_every_eval_topic():
    """research/experiments/human_poems_abstract.jsonl (HC1) is training data: valid one-syllable poems on
    the kit's prompt-only topics and TP2's, none near a preset's eval topic or the reference's."""
    from haiku_kit.verify.haiku import check

    rows = [json.loads(line) for line in
            (EXPERIMENTS / "human_poems_abstract.jsonl").read_text(encoding="utf-8").splitlines()]
    written_for = set(load_topic_list("embedded")) | set(load_topic_list(EXPERIMENTS / "tp2_topics.txt"))
    assert len(rows) == len(written_for) and {r["topic"] for r in rows} == written_for
    assert [r["haiku"] for r in rows if not check(r["haiku"]).is_haiku or _not_one_syllable(r["haiku"])] == []
    cfg = load_preset("cpu-full")
    dd = data.build_splits(load_embedded(), None, fractions=cfg.data.fractions, seed=cfg.data.seed,
                           min_similarity=cfg.data.min_similarity)
    avoid = sorted(set(dd["eval"]["topic"]))
    if REF_EVAL.is_file():
        avoid += [r["topic"] for r in load_eval_data(str(REF_EVAL))[0]]
    assert _near_pairs(sorted(written_for), avoid) == []
