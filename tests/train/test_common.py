"""trainer_utils.py: the CPU log-prob kernel and resuming."""

from __future__ import annotations


def test_cpu_logprob_fallback_matches_full_logits():
    import torch

    from haiku_kit.train.common import TorchChunkedLogProb

    torch.manual_seed(0)
    hidden, weight = torch.randn(5, 8, requires_grad=True), torch.randn(11, 8)
    targets = torch.tensor([0, 3, 10, 2, 2])
    logp, ent, _, _, top1 = TorchChunkedLogProb.apply(hidden, weight, None, targets, 0.7, 4, 30.0, 1.0,
                                                      ("entropy", "is_top1"))
    logits = 30.0 * torch.tanh((hidden @ weight.t()) / 30.0) / 0.7
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(logp, expected, atol=1e-5) and ent.shape == (5,) and top1.dtype == torch.bool
    logp.sum().backward()
    assert hidden.grad is not None


def test_settings_fields_pass_to_trl_by_name_and_trainer_args_are_checked():
    import dataclasses

    import pytest
    from trl import GRPOConfig, SFTConfig

    from haiku_kit.config import GRPOSettings, SFTSettings
    from haiku_kit.errors import ConfigError
    from haiku_kit.train.common import passthrough_names, with_trainer_args

    for settings, config in ((SFTSettings, SFTConfig), (GRPOSettings, GRPOConfig)):
        names = passthrough_names(settings, config)
        known = {f.name for f in dataclasses.fields(config)}
        assert names and set(names) <= known
        assert [n for n in (f.name for f in dataclasses.fields(settings)) if n in known] == names
    assert with_trainer_args(GRPOConfig, {"beta": 0.0}, {"beta": 0.1}, "grpo") == {"beta": 0.1}
    with pytest.raises(ConfigError, match="grpo.trainer_args: GRPOConfig has no field 'betta'"):
        with_trainer_args(GRPOConfig, {}, {"betta": 0.1}, "grpo")
