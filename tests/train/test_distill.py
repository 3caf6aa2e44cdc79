"""distill.py: self-distillation after SFT, on the tiny random Gemma 3 with real TRL training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml
from training_helpers import corpus_script, read_log, rows, tiny_cfg

from haiku_kit.config import DistillSettings, validate
from haiku_kit.data import splits as data
from haiku_kit.data import topics
from haiku_kit.data.sources import load_topic_list
from haiku_kit.errors import ConfigError, DataError
from haiku_kit.generate.constrained import ends_dangling, word_prefixes
from haiku_kit.train import distill
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.syllables import analyze_line
from haiku_kit.verify.text import build_prompt, normalize

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


def test_extra_topics_come_after_the_splits_and_never_near_an_eval_topic(splits, tmp_path):
    eval_topic = splits["eval"]["topic"][0]
    train_topic = splits["sft"]["topic"][0]
    extra = ["Nervous before a first job interview.", eval_topic.upper() + "!", train_topic,
             "Missing a friend who moved away.", "Nervous before a first job interview"]
    prompts = distill.training_prompts(splits, 2, extra)
    assert [p["topic"] for p in prompts[2:]] == [
        "Nervous before a first job interview.", "Missing a friend who moved away."]
    assert prompts[2]["prompt"] == build_prompt("Nervous before a first job interview.")
    # near, not only equal: the eval topic reworded
    eval_topics = list(splits["eval"]["topic"])
    assert topics.far_from([f"the {eval_topic}"], eval_topics) == []

    listed = load_topic_list("embedded")
    assert len(listed) >= 250 and len(set(map(normalize, listed))) == len(listed)
    file = tmp_path / "topics.txt"
    file.write_text("# mine\n\n  a  lost glove \nfirst frost\n")
    assert load_topic_list(file) == ["a lost glove", "first frost"]
    file.write_text("# only a comment\n")
    with pytest.raises(DataError, match="topics.txt: no topic"):
        load_topic_list(file)
    with pytest.raises(DataError, match="absent.txt: cannot read"):
        load_topic_list(tmp_path / "absent.txt")
    with pytest.raises(ConfigError, match="distill.extra_topics=.*absent.txt.*no such file"):
        validate(tiny_cfg("unused", tmp_path, "distill.topics=3",
                          f"distill.extra_topics={tmp_path / 'absent.txt'}"))
    validate(tiny_cfg("unused", tmp_path, "distill.topics=3", f"distill.extra_topics={file}"))


def test_keep_verified_drops_invalid_duplicate_and_off_topic_poems():
    rows = [{"topic": "autumn rain on a tool shed", "prompt": "p0"},
            {"topic": "a cat asleep in the sun", "prompt": "p1"}]
    texts = [[POEMS[0], "<think>5 7 5</think>" + POEMS[0], "rain\non the roof", POEMS[2]],
             [POEMS[1]]]
    kept, valid = distill.keep_verified(rows, texts, min_similarity=-1.0)
    assert valid == 3  # the think-stripped copy is a duplicate, the two-line one invalid
    assert [(r["prompt"], r["haiku"], r["cosine"]) for r in kept] == [
        ("p0", POEMS[0], None), ("p0", POEMS[2], None), ("p1", POEMS[1], None)]
    assert [r["source_id"] for r in kept] == ["self:0", "self:1", "self:2"]

    # The snow poem is far from "autumn rain on a tool shed": a threshold between the cosines
    # keeps the two on-topic poems only, each with its cosine.
    from haiku_kit.verify.similarity import get_scorer

    cos = get_scorer().cosine([r["topic"] for r in kept], [r["haiku"] for r in kept])
    assert cos[1] < min(cos[0], cos[2])
    threshold = (cos[1] + min(cos[0], cos[2])) / 2
    on_topic, valid = distill.keep_verified(rows, texts, min_similarity=threshold)
    assert valid == 3 and [r["haiku"] for r in on_topic] == [POEMS[0], POEMS[1]]
    assert [r["cosine"] for r in on_topic] == pytest.approx([cos[0], cos[2]], abs=1e-5)
    assert [r["source_id"] for r in on_topic] == ["self:0", "self:1"]


def test_sampled_poems_are_all_ones_check_accepts(tiny_model_dir, tmp_path, splits):
    from haiku_kit.model import load as modeling

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

    prompts = distill.training_prompts(splits, 2)  # the settings' checks need no more
    short, stats = distill.sample_verified(model, tok, prompts,
                                           replace(settings, max_word_syllables=1, topic_words=True))
    assert stats["max_word_syllables"] == 1 and stats["topic_words"] is True
    topics = {r["topic"]: word_prefixes(r["topic"]) for r in prompts}
    for row in short:
        for line in row["haiku"].split("\n"):
            for word in analyze_line(line).words:
                if word.source == "dict" and min(word.counts) > 1:
                    assert word.text.strip(".,;:!?'\"").lower() in topics[row["topic"]], row
    _, stats = distill.sample_verified(model, tok, prompts[:1], replace(settings, topic_words=True))
    assert stats["topic_words"] is False  # no word limit, nothing to be exempt from
    clean, stats = distill.sample_verified(model, tok, prompts,
                                           replace(settings, clean_line_ends=True))
    assert stats["clean_line_ends"] is True
    assert not any(ends_dangling(line) for row in clean for line in row["haiku"].split("\n"))


def test_two_rounds_continue_sft_on_the_kept_poems_and_keep_every_adapter(
        tiny_model_dir, tmp_path, splits):
    from haiku_kit.model import load as modeling
    from haiku_kit.train import sft

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
    from haiku_kit.config import apply_overrides, load_preset, validate
    from haiku_kit.errors import ConfigError

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


def test_distill_trainer_samples_the_extra_topics_after_the_training_ones(
        tiny_model_dir, tmp_path, splits):
    from haiku_kit.model import load as modeling

    file = tmp_path / "topics.txt"
    file.write_text("Nervous before a first job interview.\n")
    cfg = tiny_cfg(tiny_model_dir, tmp_path, "distill.topics=2", f"distill.extra_topics={file}",
                   "distill.min_similarity=-1.0", "distill.max_steps=1",
                   "distill.max_new_tokens=24")
    model, tok = modeling.load_from_config(cfg)
    trainer = distill.distill_trainer(cfg, model, tok, splits)
    assert trainer is not None and trainer.distill_stats["prompts"] == 3
    kept = read_log(distill.distill_dir(cfg, 1) / "poems.jsonl")
    assert {r["topic"] for r in kept} <= {p["topic"] for p in
                                          distill.training_prompts(splits, 2, load_topic_list(file))}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_corpus_poems_keep_valid_unique_poems_on_topics_far_from_every_eval_topic(
        splits, tmp_path):
    eval_topic = splits["eval"]["topic"][0]
    file = _write_jsonl(tmp_path / "mine.jsonl", [
        {"topic": "a tool shed in the rain", "haiku": POEMS[0]},
        {"topic": "a tool shed in the rain", "haiku": POEMS[0]},  # the same poem again
        {"topic": "a cat asleep", "haiku": "the cat sleeps\nall day\nin the sun"},  # 3-2-4
        {"topic": f"the {eval_topic}!", "haiku": POEMS[1]},  # an eval topic, reworded
        {"topic": "a bus stop at dusk", "haiku": POEMS[2], "round": 3},  # other keys ignored
        {"topic": "", "haiku": POEMS[1]},  # no topic to prompt with
    ])
    kept, stats = distill.corpus_poems(str(file), splits)
    assert [(r["topic"], r["haiku"]) for r in kept] == [
        ("a tool shed in the rain", POEMS[0]), ("a bus stop at dusk", POEMS[2])]
    assert kept[1]["prompt"] == build_prompt("a bus stop at dusk")
    assert [r["source_id"] for r in kept] == ["corpus:0", "corpus:1"]
    assert stats == {"corpus": str(file), "rows": 6, "no_topic": 1, "near_eval_topic": 1,
                     "valid": 2, "kept": 2}

    # with the judge, filler that check accepts is dropped too (a poem cut off on "the")
    filler = "the rain on the shed\nthe rain on the roof, the rain\ndrips on the rake, the"
    assert hk.check(filler).is_haiku
    file2 = _write_jsonl(tmp_path / "judged.jsonl", [
        {"topic": "a tool shed in the rain", "haiku": POEMS[0]},
        {"topic": "a tool shed in the rain", "haiku": filler}])
    judged, stats = distill.corpus_poems(str(file2), splits, judge=True)
    assert [r["haiku"] for r in judged] == [POEMS[0]]
    assert stats["valid"] == 2 and stats["judged_good"] == 1 and stats["kept"] == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"topic": "a", "haiku": POEMS[0]}) + "\n{\"topic\": \"b\"}\n")
    with pytest.raises(DataError, match=r"bad\.jsonl.*(row|line) 2"):
        distill.corpus_poems(str(bad), splits)
    with pytest.raises(ConfigError, match=r"distill\.corpus=.*absent\.jsonl.*no such file"):
        validate(tiny_cfg("unused", tmp_path, f"distill.corpus={tmp_path / 'absent.jsonl'}"))
    validate(tiny_cfg("unused", tmp_path, f"distill.corpus={file}"))


def test_best_per_topic_keeps_each_topics_most_similar_poems_in_order():
    kept = [{"topic": "a", "haiku": "a1", "cosine": 0.6}, {"topic": "a", "haiku": "a2", "cosine": 0.8},
            {"topic": "b", "haiku": "b1", "cosine": 0.7}, {"topic": "a", "haiku": "a3", "cosine": 0.7},
            {"topic": "a", "haiku": "a4", "cosine": 0.7}]
    assert [r["haiku"] for r in distill.best_per_topic(kept, 1)] == ["a2", "b1"]
    assert [r["haiku"] for r in distill.best_per_topic(kept, 2)] == ["a2", "b1", "a3"]  # a tie: the first
    assert distill.best_per_topic(kept, 0) == kept


def test_the_embedded_corpus_is_verified_poems_on_the_presets_training_topics():
    from haiku_kit.config import load_preset

    rows_ = [json.loads(line) for line in
             distill.corpus_path("embedded").read_text(encoding="utf-8").splitlines()]
    assert len(rows_) >= 400  # cpu-full's GRPO model kept 830
    assert all(hk.check(r["haiku"]).is_haiku for r in rows_)
    assert len({r["haiku"] for r in rows_}) == len(rows_)
    assert all(r["cosine"] >= 0.5 for r in rows_)
    cfg = load_preset("cpu-demo")
    dd = data.build_splits(data.load_embedded(), None, fractions=cfg.data.fractions,
                           seed=cfg.data.seed, min_similarity=cfg.data.min_similarity)
    training = set(dd["sft"]["topic"]) | set(dd["rl"]["topic"])
    prompt_only = set(topics.fresh_topics(load_topic_list("embedded"),
                                          list(dd["eval"]["topic"]), sorted(training)))
    written = {r["topic"] for r in rows_}
    assert written <= training | prompt_only  # training topics, or prompt-only ones far from eval
    assert written & prompt_only and written & training


def test_a_corpus_round_trains_on_the_files_poems_without_sampling(
        tiny_model_dir, tmp_path, splits):
    from haiku_kit.model import load as modeling

    file = _write_jsonl(tmp_path / "mine.jsonl", [
        {"topic": "a tool shed in the rain", "haiku": POEMS[0]},
        {"topic": "a bus stop at dusk", "haiku": POEMS[2]}])
    cfg = tiny_cfg(tiny_model_dir, tmp_path, f"distill.corpus={file}", "distill.max_steps=2",
                   "distill.learning_rate=1e-3")
    assert cfg.distill.topics == 0  # the corpus alone turns the round on
    model, tok = modeling.load_from_config(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    trainer = distill.distill_trainer(cfg, model, tok, splits)
    assert trainer.distill_stats["kept"] == 2 and "sampled" not in trainer.distill_stats
    trainer.train()
    assert any(not p.detach().equal(before[n]) for n, p in trainer.model.named_parameters()
               if n in before)
    kept = read_log(distill.distill_dir(cfg, 1) / "poems.jsonl")
    assert [r["haiku"] for r in kept] == [POEMS[0], POEMS[2]]
    assert distill.distilled_answers(cfg) == [POEMS[0], POEMS[2]]  # counted in train overlap
    assert distill.distill_trainer(cfg, model, tok, splits, round_=2) is None  # rounds: 1


def test_the_corpus_script_collects_the_chosen_rounds_valid_poems_once(tmp_path):
    script = corpus_script()
    run = tmp_path / "run"
    for round_, records in ((1, [{"topic": "a", "haiku": POEMS[0], "cosine": 0.61234}]),
                            (2, [{"topic": "a", "haiku": POEMS[0], "cosine": 0.6},
                                 {"topic": "b", "haiku": "not\na\nhaiku", "cosine": 0.7},
                                 {"topic": "c", "haiku": POEMS[1], "cosine": None}])):
        folder = run / "sft" / "distill" / f"round-{round_}"
        folder.mkdir(parents=True)
        _write_jsonl(folder / "poems.jsonl", records)
    out = tmp_path / "corpus.jsonl"
    assert script.main([str(run), "--rounds", "1", "2", "--out", str(out)]) == 0
    assert read_log(out) == [{"topic": "a", "haiku": POEMS[0], "round": 1, "cosine": 0.612},
                             {"topic": "c", "haiku": POEMS[1], "round": 2, "cosine": None}]
    assert script.main([str(run), "--out", str(out)]) == 0  # the last round alone
    assert read_log(out) == [{"topic": "a", "haiku": POEMS[0], "round": 2, "cosine": 0.6},
                             {"topic": "c", "haiku": POEMS[1], "round": 2, "cosine": None}]
    assert script.main([str(run), "--rounds", "3", "--out", str(out)]) == 2
    assert script.main([str(tmp_path / "empty"), "--out", str(out)]) == 2


def test_the_corpus_script_selects_the_best_poems_of_a_saved_pool(tmp_path, capsys):
    script = corpus_script()
    shed = "cold rain on the shed\nthe rake and the hoe rust there\nautumn drips all night"
    pool = tmp_path / "pool.jsonl"
    _write_jsonl(pool, [
        {"topic": "autumn rain on a tool shed", "source": "grpo",
         "completions": [POEMS[2], POEMS[0], "rain\non the roof", POEMS[0], shed]},
        {"topic": "a cat asleep in the sun", "source": "grpo", "completions": [POEMS[1]]}])
    out = tmp_path / "corpus.jsonl"
    assert script.main(["--from-pool", str(pool), "--out", str(out)]) == 0
    assert "2 topics x 5 poems, 4 valid, 3 kept" in capsys.readouterr().out
    every = read_log(out)  # the snow poem is off the rain topic (cos < 0.5)
    assert [r["haiku"] for r in every] == [POEMS[0], shed, POEMS[1]]
    assert every[1]["cosine"] > every[0]["cosine"] >= 0.5 and every[2]["round"] == "grpo"
    assert script.main(["--from-pool", str(pool), "--best", "1", "--out", str(out)]) == 0
    assert "4 valid, 2 kept" in capsys.readouterr().out
    assert read_log(out) == every[1:]  # each topic's most similar poem only

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "a", "source": "grpo", "completions": []}\n{"topic": "b"}\n')
    before = out.read_bytes()
    assert script.main(["--from-pool", str(pool), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:2" in err
    assert script.main(["--from-pool", str(tmp_path / "absent.jsonl"), "--out", str(out)]) == 2
    assert "absent.jsonl: no such file" in capsys.readouterr().err
    assert script.main(["--out", str(out)]) == 2  # neither a run nor a pool
    assert out.read_bytes() == before  # a failed call writes nothing
