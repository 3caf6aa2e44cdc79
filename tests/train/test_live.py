"""Live training view: compact terminal lines and one figure redrawn under one display handle."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from haiku_kit.train import callbacks as live

LOGS = {"loss": 0.5, "reward": 0.25, "rewards/haiku_reward/mean": 0.125,
        "rewards/syllable_reward/mean": 0.75, "monitor/valid_share": 0.125,
        "monitor/mean_distance": 2.5, "learning_rate": 3e-5, "grad_norm": math.nan}


def test_compact_line_names_the_values_a_reader_scans():
    line = live.compact_line(LOGS, 12, 140)
    assert line.startswith("step 12/140 | loss 0.5 | reward 0.25 | haiku 0.125 | dist 2.5")
    assert "lr 3.00e-05" in line and "haiku_reward 0.125" in line
    assert "syllable_reward 0.75" in line and "grad_norm" not in line  # NaN dropped
    assert live.compact_line({}, 3, -1) == "step 3"


def test_panels_only_show_series_with_data():
    history = [{"step": 1, "loss": 1.0}, {"step": 2, **LOGS}]
    titles = [t for t, _ in live.panels(history)]
    assert titles == ["reward components", "valid and good haiku share", "mean syllable distance",
                      "loss"]
    assert live.panels([{"step": 1, "loss": 2.0}]) == [("loss", {"loss": [(1, 2.0)]})]


def test_live_view_redraws_every_n_logs_under_one_handle(monkeypatch):
    shown = []

    class Handle:
        def update(self, fig):
            shown.append(("update", len(fig.axes)))

    import IPython.display

    def fake_display(fig, display_id):
        shown.append(("display", len(fig.axes)))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    view = live.LiveView(every=2)
    for step in range(1, 6):
        view.on_log(None, SimpleNamespace(global_step=step), None, logs=dict(LOGS))
    view.on_log(None, SimpleNamespace(global_step=5), None, logs={"train_runtime": 1.0})
    view.on_train_end(None, None, None)
    assert [kind for kind, _ in shown] == ["display", "update", "update"]
    assert all(n == 4 for _, n in shown)  # reward, haiku share, distance, loss
    assert len(view.history) == 5


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        live.LiveView(every=0)
