"""distill.py: self-distillation after SFT, on the tiny random Gemma 3 with real TRL training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml
from training_helpers import read_log, rows, tiny_cfg

from haiku_kit import data, distill
from haiku_kit import haiku as hk
from haiku_kit.constrained import ends_dangling, word_prefixes
from haiku_kit.settings import DistillSettings
from haiku_kit.syllables import analyze_line

POEMS = [
    "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake",
    "the cat sleeps all day\nin a square of morning sun\nher tail twitches once",
    "first snow on the street\nthe buses hum through the white\nquiet bus stop lights",
]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")
    data.build_splits(rows(30), folder, fractions=(1, 1, 1), min_similarity=None)
    return data.load_splits(str(folder))


def test_prompts_come_from_training_topics_only(splits):
    prompts = distill.training_prompts(splits, 1000)
    topics = [p["topic"] for p in prompts]
    assert len(topics) == len(set(topics))
    assert set(topics) == set(splits["sft"]["topic"]) | set(splits["rl"]["topic"])
    assert not set(topics) & set(splits["eval"]["topic"])
    assert [p["topic"] for p in distill.training_prompts(splits, 2)] == topics[:2]


def test_sampled_poems_are_all_ones_check_accepts(tiny_model_dir, tmp_path, splits):
    from haiku_kit import modeling

    cfg = tiny_cfg(tiny_model_dir, tmp_path)
    model, tok = modeling.load_from_config(cfg, trainable=False)
    settings = DistillSettings(topics=4, k=2, min_similarity=-1.0, batch_size=8, max_new_tokens=24)
    kept, stats = distill.sample_verified(model, tok, distill.training_prompts(splits, 4), settings)
    assert stats["prompts"] == 4 and stats["sampled"] == 8 and stats["kept"] == len(kept)
    assert stats["valid"] <= 8
    for row in kept:
        assert hk.check(row["haiku"]).is_haiku and row["source_id"].startswith("self:")
    assert len({r["haiku"] for r in kept}) == len(kept)

    best, stats = distill.sample_verified(model, tok, distill.training_prompts(splits, 4),
                                          replace(settings, candidates=3))
    assert stats["sampled"] == 8 and stats["drafts"] == 24 and stats["kept"] == len(best)
    assert all(hk.check(row["haiku"]).is_haiku for row in best)

    prompts = distill.training_prompts(splits, 4)
    short, stats = distill.sample_verified(model, tok, prompts,
                                           replace(settings, max_word_syllables=1, topic_words=True))
    assert stats["max_word_syllables"] == 1 and stats["topic_words"] is True
    topics = {r["topic"]: word_prefixes(r["topic"]) for r in prompts}
    for row in short:
        for line in row["haiku"].split("\n"):
            for word in analyze_line(line).words:
                if word.source == "dict" and min(word.counts) > 1:
                    assert word.text.strip(".,;:!?'\"").lower() in topics[row["topic"]], row
    _, stats = distill.sample_verified(model, tok, prompts, replace(settings, topic_words=True))
    assert stats["topic_words"] is False  # no word limit, nothing to be exempt from
    clean, stats = distill.sample_verified(model, tok, prompts,
                                           replace(settings, clean_line_ends=True))
    assert stats["clean_line_ends"] is True
    assert not any(ends_dangling(line) for row in clean for line in row["haiku"].split("\n"))


def test_two_rounds_continue_sft_on_the_kept_poems_and_keep_every_adapter(
        tiny_model_dir, tmp_path, splits):
    from haiku_kit import modeling, sft

    cfg = tiny_cfg(tiny_model_dir, tmp_path, "distill.topics=3", "distill.rounds=2",
                   "distill.max_steps=2", "distill.learning_rate=1e-3")
    assert distill.distill_trainer(tiny_cfg(tiny_model_dir, tmp_path / "off"), None, None,
                                   splits) is None  # distill.topics 0: off
    assert distill.distill_trainer(cfg, None, None, splits, round_=3) is None  # rounds: 2
    model, tok = modeling.load_from_config(cfg)
    trainer = sft.sft_trainer(cfg, model, tok, splits)
    trainer.args.max_steps = 1
    trainer.train()
    sft_adapter = sft.save_sft(cfg, trainer)
    weights = "adapter_model.safetensors"
    sft_weights = (sft_adapter / weights).read_bytes()

    # Poems already sampled (a rerun) are reused, not sampled again.
    prompts = distill.training_prompts(splits, 3)
    for round_ in (1, 2):
        folder = distill.distill_dir(cfg, round_)
        folder.mkdir(parents=True)
        (folder / "poems.jsonl").write_text("".join(
            json.dumps({**p, "haiku": poem, "source_id": f"self:{i}"}) + "\n"
            for i, (p, poem) in enumerate(zip(prompts, POEMS[round_ - 1:]))))
    adapter = distill.distil_after_sft(cfg, model, tok, sft_adapter, splits)

    assert adapter == sft_adapter  # the pipeline goes on from RUN/sft/adapter
    kept = {name: (distill.distill_dir(cfg) / name / weights).read_bytes()
            for name in ("sft-adapter", "round-1/adapter", "round-2/adapter")}
    assert kept["sft-adapter"] == sft_weights
    assert (adapter / weights).read_bytes() == kept["round-2/adapter"]
    assert len(set(kept.values())) == 3  # each round trained on
    for round_, rows_ in ((1, 3), (2, 2)):
        log = read_log(distill.distill_dir(cfg, round_) / "log.jsonl")
        assert [e["step"] for e in log if "loss" in e] == [1, 2]
        effective = yaml.safe_load((tmp_path / "config.yaml").read_text())["effective"]
        assert effective[f"distill-{round_}"]["train_rows"] == rows_
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["sft"]["max_steps"] == 3  # the run's own SFT settings stay as they were
    assert saved["effective"]["distill-1"]["max_steps"] == 2


def test_word_syllable_limit_per_round_and_bad_values_get_one_line():
    from haiku_kit.config import apply_overrides, load_preset
    from haiku_kit.errors import ConfigError
    from haiku_kit.settings import validate

    limit = distill.word_syllable_limit
    assert [limit(DistillSettings(max_word_syllables=1), r) for r in (1, 2, 3)] == [1, 1, 1]
    per_round = DistillSettings(max_word_syllables=[0, 0, 1])
    assert [limit(per_round, r) for r in (1, 2, 3, 4)] == [0, 0, 1, 1]
    full = load_preset("cpu-full")
    validate(apply_overrides(full, ["distill.max_word_syllables=[0, 1]"]))
    for bad in ("[]", "-1", "[0, -2]"):
        with pytest.raises(ConfigError, match=r"distill\.max_word_syllables"):
            validate(apply_overrides(full, [f"distill.max_word_syllables={bad}"]))
    with pytest.raises(ConfigError, match=r"distill\.max_word_syllables"):
        apply_overrides(full, ["distill.max_word_syllables=one"])
    with pytest.raises(ConfigError, match=r"distill\.topic_words"):
        apply_overrides(full, ["distill.topic_words=perhaps"])
    with pytest.raises(ConfigError, match=r"distill\.clean_line_ends"):
        apply_overrides(full, ["distill.clean_line_ends=perhaps"])
    assert apply_overrides(full, ["distill.clean_line_ends=true"]).distill.clean_line_ends is True
