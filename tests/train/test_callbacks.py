"""Callbacks: reward capture, sample log, hacking monitor, collapse detector, logs and plots."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

from haiku_kit.config import CollapseSettings, MonitorSettings
from haiku_kit.train.callbacks import (
    CollapseCallback,
    CollapseDetector,
    HackingMonitor,
    JsonlLogger,
    RewardRecorder,
    SampleLogger,
    compact_line,
    plot_training,
    read_jsonl,
    write_csv,
)


def healthy_series(n=60, seed=0):
    rng = random.Random(seed)
    return [min(1.5, -1.0 + 0.04 * i) + rng.gauss(0, 0.15) for i in range(n)]


def collapsing_series(n=60, at=40, seed=0):
    rng = random.Random(seed)
    return [(-1.0 + 0.04 * i if i < at else -1.5) + rng.gauss(0, 0.05) for i in range(n)]


def feed(detector, values, empty=None):
    for step, v in enumerate(values, 1):
        if detector.observe(step, v, (empty or {}).get(step, 0.0)):
            return step
    return None


def test_collapse_detector_fires_on_a_sharp_fall():
    fired = feed(CollapseDetector(CollapseSettings()), collapsing_series())
    assert fired is not None and 40 < fired <= 43


def test_collapse_detector_stays_quiet_on_healthy_noisy_training():
    for seed in range(5):
        assert feed(CollapseDetector(CollapseSettings()), healthy_series(seed=seed)) is None


def test_collapse_detector_fires_on_the_max_metric_too():
    d = CollapseDetector(CollapseSettings(metric="max"))
    assert feed(d, [1.0] * 10 + [0.0] * 5) == 12
    assert "fell below" in d.reason


def test_collapse_detector_fires_when_completions_go_empty():
    d = CollapseDetector(CollapseSettings(patience=2))
    assert feed(d, [0.5] * 10, empty={6: 0.9, 7: 1.0}) == 7
    assert "empty" in d.reason


def test_a_single_bad_step_is_not_a_collapse():
    d = CollapseDetector(CollapseSettings(patience=2))
    assert feed(d, [1.0] * 10 + [-5.0] + [1.0] * 10) is None


def batch_call(recorder, step, completions, prompts, topics, comp_values):
    state = SimpleNamespace(global_step=step)
    for name, values in comp_values.items():
        recorder.record(name, prompts, completions, {"topic": topics, "trainer_state": state}, values)


def test_recorder_groups_components_and_writes_samples(tmp_path):
    seen = []
    recorder = RewardRecorder(["a", "b"], weights_fn=lambda: [1.0, 2.0])
    recorder.listeners.append(seen.append)
    recorder.listeners.append(SampleLogger(tmp_path / "samples.jsonl", every=1, n_print=1))

    def reward_a(prompts, completions, **kwargs):
        return [1.0 for _ in completions]

    def reward_b(prompts, completions, **kwargs):
        return [0.5 if "x" in c[0]["content"] else 0.0 for c in completions]

    wrapped = recorder.wrap_all([reward_a, reward_b])
    assert [w.__name__ for w in wrapped] == ["a", "b"]
    prompts = [[{"role": "user", "content": "write about rain"}]] * 2
    completions = [[{"role": "assistant", "content": "x y z"}], [{"role": "assistant", "content": "q"}]]
    kwargs = {"topic": ["rain", "rain"], "trainer_state": SimpleNamespace(global_step=4)}
    for fn in wrapped:
        fn(prompts=prompts, completions=completions, **kwargs)
    assert len(seen) == 1 and seen[0].totals == [2.0, 1.0] and seen[0].step == 5
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert rows[0]["rewards"] == {"a": 1.0, "b": 0.5} and rows[0]["completion"] == "x y z"
    assert rows[0]["topic"] == "rain" and rows[0]["prompt"] == "write about rain"


def test_sample_logger_respects_every(tmp_path):
    logger = SampleLogger(tmp_path / "s.jsonl", every=3, n_print=0)
    recorder = RewardRecorder(["a"])
    recorder.listeners.append(logger)
    for step in range(6):
        completions = [f"c{step}"]
        batch_call(recorder, step, completions, ["p"], ["t"], {"a": [0.0]})
    assert sorted({r["step"] for r in read_jsonl(tmp_path / "s.jsonl")}) == [1, 3, 6]


def test_hacking_monitor_measures_shares_and_warns(capsys):
    answer = "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake"
    monitor = HackingMonitor(MonitorSettings(copy_prompt=0.2, train_overlap=0.2), train_answers=[answer])
    recorder = RewardRecorder(["a"])
    recorder.listeners.append(monitor)
    prompt = [{"role": "user", "content": "Generate a haiku about the following topic: autumn rain"}]
    completions = [answer, "Generate a haiku about the following topic: autumn rain", "new poem here", ""]
    batch_call(recorder, 1, completions, [prompt] * 4, ["autumn rain"] * 4, {"a": [0, 0, 0, 0]})
    logs = {"reward": 0.0, "frac_reward_zero_std": 0.9, "completions/clipped_ratio": 0.1}
    monitor.on_log(None, SimpleNamespace(global_step=1), None, logs=logs)
    assert logs["monitor/copy_prompt_share"] == 0.25 and logs["monitor/train_overlap_share"] == 0.25
    assert logs["monitor/empty_share"] == 0.25
    err = capsys.readouterr().err
    assert "copy_prompt_share" in err and "train_overlap_share" in err and "frac_reward_zero_std" in err
    assert "clipped_ratio" not in err


def test_the_monitor_logs_the_judges_shares():
    """GRPO logs what eval reports: valid, fluent and good shares of each batch (real MiniLM)."""
    monitor = HackingMonitor(MonitorSettings())
    recorder = RewardRecorder(["a"])
    recorder.listeners.append(monitor)
    topic = "autumn rain"
    prompt = [{"role": "user", "content": f"Generate a haiku about the following topic: {topic}"}]
    completions = [
        "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake",  # good
        "the rain on the roof\nof the shed in the rain, then\nthe rain on the, the",  # filler
        "rain",  # not a haiku
        "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake",
    ]
    batch_call(recorder, 1, completions, [prompt] * 4, [topic, topic, topic, "a tax form"],
               {"a": [0, 0, 0, 0]})
    logs = {"reward": 0.0}
    monitor.on_log(None, SimpleNamespace(global_step=1), None, logs=logs)
    assert logs["monitor/valid_share"] == 0.75  # the filler counts right
    assert logs["monitor/fluent_share"] == 0.75  # all but the filler ("rain" breaks no rule)
    assert logs["monitor/good_share"] == 0.25  # the same poem under "a tax form" is off topic
    assert logs["monitor/mean_distance"] > 0
    assert "good 0.25" in compact_line(logs, 1)


def test_collapse_callback_stops_training_and_tracks_good_checkpoints():
    cb = CollapseCallback(CollapseSettings(window=3, patience=1))
    recorder = RewardRecorder(["a"])
    recorder.listeners.append(cb)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    for step, value in enumerate([1.0, 1.0, 1.0, 1.0, -2.0], 1):
        batch_call(recorder, step - 1, ["poem"], ["p"], ["t"], {"a": [value]})
        cb.on_step_end(None, SimpleNamespace(global_step=step), control)
        if step == 2:
            cb.on_save(None, SimpleNamespace(global_step=2), control)
    assert control.should_training_stop and cb.collapsed and cb.checkpoints == [2]


def test_jsonl_logger_csv_and_plot(tmp_path):
    log = JsonlLogger(tmp_path / "log.jsonl")
    for step in range(1, 5):
        logs = {"loss": 1.0 / step, "reward": step * 0.1, "rewards/haiku_reward/mean": 0.1 * step,
                "completions/mean_length": 20 - step}
        log.on_log(None, SimpleNamespace(global_step=step, epoch=step / 4), None, logs=logs)
    log.on_train_end(None, None, None)
    assert (tmp_path / "log.csv").read_text().startswith("step,epoch,loss")
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["loss"] == 1.0
    png = plot_training(tmp_path / "log.jsonl", tmp_path / "training.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert write_csv(tmp_path / "log.jsonl", tmp_path / "again.csv").is_file()


def test_each_phase_writes_its_gpu_peak_memory_beside_its_log(tmp_path, monkeypatch):
    """On a GPU (CUDA's counters stand in for one here: no GPU runs these tests) the phase's
    peak memory lands in peak_memory.json; on a CPU no file is written."""
    import torch

    log = JsonlLogger(tmp_path / "log.jsonl")
    log.on_log(None, SimpleNamespace(global_step=1, epoch=1.0), None, logs={"loss": 1.0})
    log.on_train_end(None, SimpleNamespace(global_step=1), None)
    assert not (tmp_path / "peak_memory.json").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: 5 * 2**30)
    log.on_train_end(None, SimpleNamespace(global_step=7), None)
    assert json.loads((tmp_path / "peak_memory.json").read_text()) == {
        "peak_gib": 3.0, "reserved_gib": 5.0, "step": 7}
