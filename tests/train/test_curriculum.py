"""Reward curricula, and one real GRPOTrainer step with every registry reward."""

from __future__ import annotations

import pytest
from transformers import TrainerControl, TrainerState

from haiku_kit.errors import ConfigError
from haiku_kit.train.curriculum import CurriculumCallback, RewardCurriculum
from haiku_kit.train.rewards import REGISTRY, RewardSpec

SPEC = RewardSpec(["haiku_reward", "length_penalty", "prompt_copy_penalty"], [1.0, 0.5, 1.0])
STAGES = [
    {"until_step": 10, "scales": {"length_penalty": 0.0, "prompt_copy_penalty": 0.2}},
    {
        "until_step": 20,
        "scales": {"length_penalty": 0.5, "prompt_copy_penalty": 0.2},
        "ramp": "linear",
    },
    {"until_step": None},
]


def test_step_and_linear_stages():
    cur = RewardCurriculum(STAGES)
    assert cur.weights_at(0, SPEC) == [1.0, 0.0, 0.2]
    assert cur.weights_at(9, SPEC) == [1.0, 0.0, 0.2]
    assert cur.weights_at(10, SPEC) == pytest.approx([1.0, 0.25, 0.2])
    assert cur.weights_at(15, SPEC) == pytest.approx([1.0, 0.375, 0.6])
    assert cur.weights_at(20, SPEC) == [1.0, 0.5, 1.0]
    assert cur.weights_at(10_000, SPEC) == [1.0, 0.5, 1.0]


def test_weights_replace_and_last_stage_holds():
    cur = RewardCurriculum([{"until_step": 5, "weights": {"haiku_reward": 3.0}}])
    assert cur.weights_at(0, SPEC) == [3.0, 0.5, 1.0]
    assert cur.weights_at(50, SPEC) == [3.0, 0.5, 1.0]  # past every until_step: last stage


def test_round_trip():
    cur = RewardCurriculum.from_dict({"phases": STAGES})
    again = RewardCurriculum.from_dict(cur.to_dict())
    assert [again.weights_at(s, SPEC) for s in range(25)] == [
        cur.weights_at(s, SPEC) for s in range(25)
    ]


@pytest.mark.parametrize(
    "stages, message",
    [
        ([], "at least one segment"),
        ([{"until_step": 5}, {"until_step": 5}], "greater than"),
        ([{"until_step": None}, {"until_step": 5}], "only the last segment"),
        ([{"until_step": 5, "ramp": "cosine"}], "ramp must be one of"),
        ([{"until_step": 5, "ramp": "linear"}], "last segment cannot ramp"),
        ([{"until_step": -1}], "until_step"),
        ([{"until_step": 5, "weigths": {}}], "unknown keys"),
        ([{"until_step": 5, "scales": {"length_penalty": "big"}}], "must be a number"),
        ("phases", "list of segments"),
    ],
)
def test_bad_curricula(stages, message):
    with pytest.raises(ConfigError, match=message):
        RewardCurriculum.from_dict(stages)


def test_unknown_reward_in_stage():
    with pytest.raises(ConfigError, match="similarity_reward"):
        CurriculumCallback([{"scales": {"similarity_reward": 0.1}}], SPEC)


class _FakeTrainer:
    def __init__(self, n: int):
        import torch

        self.reward_weights = torch.ones(n)


def test_callback_updates_weights_in_place_across_steps():
    trainer = _FakeTrainer(3)
    tensor = trainer.reward_weights
    cb = CurriculumCallback(STAGES, SPEC).attach(trainer)
    state, control = TrainerState(), TrainerControl()
    seen = []
    for step in (0, 12, 25):
        state.global_step = step
        cb.on_step_begin(None, state, control)
        seen.append(trainer.reward_weights.tolist())
    assert trainer.reward_weights is tensor  # same tensor object, updated in place
    assert seen[0] == [1.0, 0.0, pytest.approx(0.2)]
    assert seen[1] == pytest.approx([1.0, 0.3, 0.36])
    assert seen[2] == [1.0, 0.5, 1.0]


def test_attach_checks_the_trainer():
    with pytest.raises(ConfigError, match="2 reward weights"):
        CurriculumCallback(STAGES, SPEC).attach(_FakeTrainer(2))
    with pytest.raises(ConfigError, match="not attached"):
        CurriculumCallback(STAGES, SPEC).apply(0)


# --------------------------------------------------------------------------- real GRPOTrainer


@pytest.fixture
def cpu_logprob(monkeypatch):
    """TRL 1.15 computes log-probs with a Triton kernel, absent on CPU: use the kit's fallback."""
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:
        from haiku_kit.train.common import TorchChunkedLogProb

        monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", TorchChunkedLogProb)


@pytest.mark.slow
def test_grpo_step_logs_every_reward_and_applies_the_curriculum(tiny_model_dir, tmp_path, cpu_logprob):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    spec = RewardSpec(list(REGISTRY), [1.0] * len(REGISTRY))
    curriculum = [
        {"until_step": 5, "scales": {"length_penalty": 0.0, "prompt_copy_penalty": 0.25}},
        {"until_step": None},
    ]
    topics = ["autumn leaves", "old pond"]
    dataset = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "user", "content": f"Generate a haiku about the following topic: {t}"}
                ],
                "topic": t,
            }
            for t in topics
        ]
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        reward_weights=spec.reward_weights(),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=spec.reward_funcs(),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.add_callback(CurriculumCallback(curriculum, spec).attach(trainer))
    trainer.train()

    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    for name in REGISTRY:
        assert f"rewards/{name}/mean" in logged, sorted(logged)
        assert isinstance(logged[f"rewards/{name}/mean"], float)
    i_len, i_copy = spec.names.index("length_penalty"), spec.names.index("prompt_copy_penalty")
    weights = trainer.reward_weights.tolist()
    assert weights[i_len] == 0.0 and weights[i_copy] == 0.25
    assert logged["curriculum/length_penalty"] == 0.0
