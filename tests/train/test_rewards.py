"""Rewards: hand-written completions, robustness, RewardSpec, reference formulas."""

from __future__ import annotations

import logging
import math

import pytest

from haiku_kit.errors import ConfigError
from haiku_kit.evaluate import metrics
from haiku_kit.train import rewards as R
from haiku_kit.verify import haiku as hk

TOPIC = "autumn leaves"
INSTRUCTION = "Generate a haiku about the following topic: autumn leaves"
PROMPT = [{"role": "user", "content": INSTRUCTION}]
POEM = "Red leaves drift and fall\nthe autumn wind carries them\nbare branches remain"

CASES = {
    "perfect": POEM,
    "off_topic": "The server is down\nall the tests are failing now\nI will fix it soon",
    "four_lines": POEM + "\nand so do I",
    "copied": INSTRUCTION,
    "preamble": "Sure! Here's a haiku:\n\n" + POEM,
    "empty": "",
    "think": "<think>Five, seven, five syllables.</think>\n" + POEM,
}
NAMES = list(CASES)
NON_SIMILARITY = [n for n in R.REGISTRY if "similarity" not in n]


def score(name: str, conversational: bool = True) -> dict[str, float]:
    completions = [
        [{"role": "assistant", "content": c}] if conversational else c for c in CASES.values()
    ]
    out = R.get_reward(name)([PROMPT] * len(NAMES), completions, topic=[TOPIC] * len(NAMES))
    assert len(out) == len(NAMES)
    assert all(type(v) is float for v in out), out
    return dict(zip(NAMES, out))


@pytest.fixture(autouse=True)
def _fresh_error_log():
    R.reset_error_log()
    yield
    R.reset_error_log()


def test_verifier_sees_the_hand_written_cases_as_intended():
    assert hk.check(POEM).is_haiku
    assert hk.check(CASES["off_topic"]).is_haiku
    assert "preamble" in hk.extract_poem(CASES["preamble"]).stripped


def test_haiku_reward():
    s = score("haiku_reward")
    assert s == {
        "perfect": 1.0,
        "off_topic": 1.0,
        "four_lines": 0.0,
        "copied": 0.0,
        "preamble": 1.0,
        "empty": 0.0,
        "think": 1.0,
    }


def test_line_count_penalty():
    s = score("line_count_penalty")
    assert s == {
        "perfect": 0.0,
        "off_topic": 0.0,
        "four_lines": -1.0,
        "copied": -1.0,
        "preamble": 0.0,
        "empty": -1.0,
        "think": 0.0,
    }


def test_syllable_rewards_are_dense():
    s, raw = score("syllable_reward"), score("syllable_distance")
    for name in ("perfect", "off_topic", "preamble", "think"):
        assert s[name] == 1.0 and raw[name] == 0.0
    distance = hk.check(CASES["four_lines"]).distance
    assert raw["four_lines"] == -distance
    assert s["four_lines"] == pytest.approx(1 - distance / 17)
    assert 0.0 < s["four_lines"] < 1.0
    assert s["four_lines"] > s["copied"] >= 0.0  # closer to 5-7-5 pays more
    assert s["empty"] == 0.0 and raw["empty"] == -34.0


def test_prompt_copy_penalty():
    s = score("prompt_copy_penalty")
    assert s["copied"] == -1.0
    assert s["empty"] == -1.0  # floor
    for name in ("perfect", "off_topic", "four_lines", "preamble", "think"):
        assert s[name] == 0.0


def test_prompt_copy_penalty_spares_the_topic_but_not_the_instruction():
    topic = "the falling leaves of autumn"
    prompt = f"Generate a haiku about the following topic: {topic}"
    on_topic = "the falling leaves of autumn\ndrift over the quiet pond\nwinter waits nearby"
    parroting = "generate a haiku about\nthe following topic now\nthe falling leaves"
    f = R.prompt_copy_penalty
    got = f([prompt, prompt], [on_topic, parroting], topic=[topic, topic])
    assert got[0] == 0.0
    assert got[1] < -0.5


def test_format_penalty():
    s = score("format_penalty")
    assert s["preamble"] == -0.5
    assert s["think"] == 0.0  # a think block is stripped for free
    assert s["perfect"] == 0.0
    assert s["empty"] == -1.0


def test_length_penalty():
    s = score("length_penalty")
    assert s["perfect"] == 0.0 and s["empty"] == -1.0
    rambling = " ".join(["leaves"] * 40)
    assert R.length_penalty([INSTRUCTION], [rambling], topic=[TOPIC]) == [-1.0]
    longish = " ".join(["leaf"] * 20)
    assert -1.0 < R.length_penalty([INSTRUCTION], [longish], topic=[TOPIC])[0] < 0.0


@pytest.mark.parametrize("name", NON_SIMILARITY)
def test_plain_text_and_conversational_completions_score_alike(name):
    assert score(name, conversational=False) == score(name, conversational=True)


@pytest.mark.slow
def test_similarity_reward():
    s = score("similarity_reward")
    assert s["perfect"] > s["off_topic"] + 0.2
    assert s["preamble"] == pytest.approx(s["perfect"], abs=1e-5)  # the poem is what counts
    assert s["think"] == pytest.approx(s["perfect"], abs=1e-5)
    assert s["empty"] == -0.5  # floor
    assert all(-1.5 <= v <= 0.5 for v in s.values())


@pytest.mark.slow
def test_gated_similarity_counts_only_haiku():
    s, full = score("gated_similarity"), score("similarity_reward")
    assert s["perfect"] == pytest.approx(full["perfect"], abs=1e-6)
    assert s["off_topic"] == pytest.approx(full["off_topic"], abs=1e-6)
    assert s["four_lines"] == 0.0 and s["copied"] == 0.0 and s["empty"] == 0.0


@pytest.mark.slow
def test_topic_comes_from_the_dataset_column_not_the_prompt():
    prompt = "Write about this: something else entirely: and more"
    a = R.similarity_reward([prompt], [POEM], topic=[TOPIC])
    b = R.similarity_reward([PROMPT], [POEM], topic=["database migrations"])
    assert a[0] > b[0]


# --------------------------------------------------------------------------- robustness

BAD = [
    None,
    42,
    3.5,
    {"foo": "bar"},
    ["not", "messages"],
    "x" * 20_000,
    "\x00\x01\ufffd" * 5,
    "   \n\n  ",
    [{"role": "assistant", "content": None}],
    object(),
]


@pytest.mark.parametrize("name", NON_SIMILARITY + ["similarity_reward", "gated_similarity"])
def test_bad_completions_get_the_floor(name, caplog):
    f = R.get_reward(name)
    with caplog.at_level(logging.WARNING, logger="haiku_kit.train.rewards"):
        out = f([INSTRUCTION] * len(BAD), BAD, topic=[TOPIC] * len(BAD))
    assert len(out) == len(BAD)
    assert all(type(v) is float for v in out)
    assert out[:6] == [f.floor] * 6, out  # non-text and huge
    assert out[6:9] == [f.floor] * 3  # garbage, blank text, empty message
    assert not caplog.records  # bad input is not an internal error


def test_empty_batch():
    assert R.haiku_reward([], []) == []


def test_internal_error_is_logged_once_and_scored_as_floor(monkeypatch, caplog):
    real = R.analyze

    def flaky(text):
        if "boom" in text:
            raise RuntimeError("injected failure")
        return real(text)

    monkeypatch.setattr(R, "analyze", flaky)
    completions = [POEM, "boom\nboom\nboom", POEM]
    with caplog.at_level(logging.WARNING, logger="haiku_kit.train.rewards"):
        first = R.haiku_reward([INSTRUCTION] * 3, completions)
        second = R.haiku_reward([INSTRUCTION] * 3, completions)
        other = R.line_count_penalty([INSTRUCTION] * 3, completions)
    assert first == second == [1.0, 0.0, 1.0]  # only the bad sample gets the floor
    assert other == [0.0, -1.0, 0.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once for haiku_reward, once for line_count_penalty
    assert "haiku_reward" in warnings[0].getMessage()
    assert "injected failure" in warnings[0].getMessage()
    assert "boom" in warnings[0].getMessage()
    assert R.ERROR_COUNTS == {"haiku_reward": 2, "line_count_penalty": 1}


def test_huge_sample_is_truncated_in_the_log(monkeypatch, caplog):
    def broken(text):
        raise RuntimeError("nope")

    monkeypatch.setattr(R, "analyze", broken)
    monkeypatch.setattr(R, "MAX_COMPLETION_CHARS", 10**9)
    with caplog.at_level(logging.WARNING, logger="haiku_kit.train.rewards"):
        assert R.format_penalty([INSTRUCTION], ["y" * 50_000]) == [-1.0]
    assert len(caplog.records) == 1 and len(caplog.records[0].getMessage()) < 1000


def test_tensor_or_nan_outputs_become_floats():
    torch = pytest.importorskip("torch")

    @R.reward(floor=-2.0)
    def returns_tensors(prompts, completions, **kwargs):
        return [torch.tensor([[0.25]]), float("nan"), None]

    assert returns_tensors(["p"] * 3, ["a", "b", "c"]) == [0.25, -2.0, -2.0]
    assert returns_tensors.__name__ == "returns_tensors"


def test_missing_topic_column_is_reported_and_floored(caplog):
    with caplog.at_level(logging.WARNING, logger="haiku_kit.train.rewards"):
        assert R.gated_similarity([INSTRUCTION], [POEM]) == [0.0]
    assert "topic" in caplog.records[0].getMessage()


FILLER = "the lot of the park\nthe moon is high in the air\nand then it goes, then"


def test_filler_penalty_takes_back_what_padding_earns():
    assert hk.check(FILLER).is_haiku  # the syllable rewards pay for it in full
    s = score("filler_penalty")
    # four_lines ends on "I": a sentence cut off where the count ran out
    assert s == {"perfect": 0.0, "off_topic": 0.0, "four_lines": -1.0, "copied": 0.0,
                 "preamble": 0.0, "empty": -1.0, "think": 0.0}
    assert R.filler_penalty([PROMPT], [FILLER], topic=[TOPIC]) == [-1.0]
    # one stutter is enough
    assert R.filler_penalty([PROMPT], ["red red leaves drift down\nthe autumn wind carries them\nbare branches remain"],
                            topic=[TOPIC]) == [-1.0]


def test_fluent_haiku_reward_is_the_haiku_reward_gated_on_reading_as_english():
    s = score("fluent_haiku_reward")
    assert s == {**score("haiku_reward")}
    assert R.haiku_reward([PROMPT], [FILLER], topic=[TOPIC]) == [1.0]
    assert R.fluent_haiku_reward([PROMPT], [FILLER], topic=[TOPIC]) == [0.0]


def test_the_fluent_preset_pays_a_haiku_less_when_it_is_filler():
    """The `fluent` weighting: the filler haiku above earns the counting preset's full haiku
    reward, and under `fluent` loses it and pays the filler penalty; a human haiku scores the
    same under both."""
    human = "red leaves drift down slow\nthe autumn wind carries them\nbare branches remain"

    def total(preset: str, poem: str) -> float:
        spec = R.RewardSpec.preset(preset)
        return sum(w * f([PROMPT], [poem], topic=[TOPIC])[0]
                   for f, w in zip(spec.reward_funcs(), spec.reward_weights()))

    assert total("counting", FILLER) - total("fluent", FILLER) == pytest.approx(1.5)
    assert total("counting", human) == pytest.approx(total("fluent", human))


# --------------------------------------------------------------------------- registry / spec


def test_registry_names_are_function_names():
    for name, f in R.REGISTRY.items():
        assert f.__name__ == name
        assert isinstance(f.floor, float)


def test_get_reward_unknown_lists_names():
    with pytest.raises(ConfigError, match="haiku_reward"):
        R.get_reward("haiku_score")


def test_reward_spec_round_trip_and_validation():
    spec = R.RewardSpec(["haiku_reward", "length_penalty"], [1.0, 0.5])
    assert R.RewardSpec.from_dict(spec.to_dict()) == spec
    assert spec.reward_funcs() == [R.haiku_reward, R.length_penalty]
    assert spec.reward_weights() == [1.0, 0.5]
    assert R.RewardSpec(["haiku_reward"]).weights == [1.0]
    assert R.RewardSpec.from_dict({"haiku_reward": 2}).weights == [2.0]
    assert R.RewardSpec.from_dict("sparse") == R.RewardSpec.preset("sparse")
    with pytest.raises(ConfigError, match="nope"):
        R.RewardSpec(["haiku_reward", "nope"])
    with pytest.raises(ConfigError, match="2 names but 1 weights"):
        R.RewardSpec(["haiku_reward", "length_penalty"], [1.0])
    with pytest.raises(ConfigError, match="more than once"):
        R.RewardSpec(["haiku_reward", "haiku_reward"])
    with pytest.raises(ConfigError, match="finite"):
        R.RewardSpec(["haiku_reward"], [math.nan])
    with pytest.raises(ConfigError, match="known presets"):
        R.RewardSpec.preset("medium")
    with pytest.raises(ConfigError, match="unknown keys"):
        R.RewardSpec.from_dict({"names": ["haiku_reward"], "wieghts": [1]})


def _weighted_total(spec: R.RewardSpec, completions, topics) -> list[float]:
    n = len(completions)
    totals = [0.0] * n
    for f, w in zip(spec.reward_funcs(), spec.reward_weights()):
        for i, v in enumerate(f([INSTRUCTION] * n, completions, topic=topics)):
            totals[i] += w * v
    return totals


@pytest.mark.slow
def test_dense_and_sparse_presets_reproduce_the_reference_formulas():
    """axeld5/gemma_haiku's rewards.py, with our verifier in place of pyphen:
    dense = three_lines + haiku + (cos - 0.5);
    sparse = three_lines + haiku, plus (cos - 0.5) only when that sum is 1."""
    from sentence_transformers import SentenceTransformer, util

    from haiku_kit.verify.similarity import embedded_minilm_path

    model = SentenceTransformer(embedded_minilm_path(), device="cpu")

    def reference(poem: str, topic: str) -> tuple[float, float]:
        check = hk.check(poem)
        three_lines = -1 if len(check.lines) != 3 else 0
        score = three_lines + int(check.is_haiku)
        sim = (
            float(
                util.cos_sim(
                    model.encode(poem, convert_to_tensor=True),
                    model.encode(topic, convert_to_tensor=True),
                )
            )
            - 0.5
        )
        return score + sim, score + sim if score == 1 else score

    completions = [c for c in CASES.values() if c]  # an empty answer is our floor by design
    flat = "Red leaves drift / the autumn wind carries them / bare branches remain"
    completions += ["one line only", "two lines\nhere", flat]
    topics = [TOPIC, "computers", "ocean", "spring rain", TOPIC, TOPIC, "the sea", "wind", "fall"]
    topics = topics[: len(completions)]
    poems = [hk.extract_poem(c).poem for c in completions]
    expected = [reference(p, t) for p, t in zip(poems, topics)]
    dense = _weighted_total(R.RewardSpec.preset("dense"), completions, topics)
    sparse = _weighted_total(R.RewardSpec.preset("sparse"), completions, topics)
    assert dense == pytest.approx([e[0] for e in expected], abs=1e-5)
    assert sparse == pytest.approx([e[1] for e in expected], abs=1e-5)
    assert len({round(v, 3) for v in sparse}) > 2  # not a degenerate batch


# --------------------------------------------------------------------------- the reference's rewards


def _reference_scores(completions, cos, sparse: bool) -> list[float]:
    """axeld5/gemma_haiku rewards.py L43-72, written out: compute_train_rewards_sparse (sparse)
    or compute_train_rewards, with reward_similarity = cos - 0.5 (cos given per completion)."""
    def lines(text):
        return [line.strip() for line in text.strip().split("\n") if line.strip()]

    def is_haiku(text):  # L16-26, with the kit's count (pyphen lang "en", L6-12)
        return len(lines(text)) == 3 and metrics.pyphen_counts(text) == [5, 7, 5]

    scores = []
    for response in (c.strip() for c in completions):
        score = (-1 if len(lines(response)) != 3 else 0) + int(is_haiku(response))
        if not sparse or score == 1:
            score += cos[response] - 0.5
        scores.append(score)
    return scores


@pytest.mark.parametrize("preset", ["ref-sparse", "ref-dense"])
def test_ref_reward_presets_are_the_references_reward_functions(preset, monkeypatch):
    completions = list(CASES.values()) + ["  " + POEM + "\n\n", "Sure! Here's a haiku:\n" + POEM]
    cos = {c.strip(): 0.1 * i for i, c in enumerate(completions)}
    seen = []
    monkeypatch.setattr(R, "_cosines", lambda topics, texts: seen.append(texts) or [cos[t] for t in texts])
    spec = R.RewardSpec.preset(preset)
    totals = _weighted_total(spec, completions, [TOPIC] * len(completions))
    assert totals == pytest.approx(_reference_scores(completions, cos, preset == "ref-sparse"))
    if preset == "ref-dense":  # similarity embeds the whole completion, preamble and all
        assert "Sure! Here's a haiku:\n" + POEM in seen[0]
    # the preamble fails the reference's counter (4 lines), where the kit's extracts the poem
    assert R.ref_haiku([PROMPT], [CASES["preamble"]])[0] == 0.0 == 1.0 - R.haiku_reward([PROMPT], [CASES["preamble"]])[0]
