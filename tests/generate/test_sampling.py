"""Fused top-k/top-p: the same filtered scores as transformers' own warpers, the same draws for a seed."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from haiku_kit.generate.sampling import (
    TopKTopPLogitsWarper,
    fuse_topk_topp,
    install_fast_topk_topp,
    uninstall_fast_topk_topp,
)


def reference(scores, top_k, top_p, keep=1):
    ids = torch.zeros(scores.size(0), 1, dtype=torch.long)
    out = TopKLogitsWarper(top_k, min_tokens_to_keep=keep)(ids, scores)
    return TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(ids, out)


def fused(scores, top_k, top_p, keep=1):
    warper = TopKTopPLogitsWarper(top_k, top_p, min_tokens_to_keep=keep)
    return warper(torch.zeros(scores.size(0), 1, dtype=torch.long), scores), warper


def assert_same(scores, top_k, top_p, keep=1):
    want = reference(scores, top_k, top_p, keep)
    got, warper = fused(scores, top_k, top_p, keep)
    # same kept set and same scores bit for bit, hence the same probabilities after softmax
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    assert torch.equal(got, want)
    assert torch.equal(got.softmax(-1), want.softmax(-1))
    return warper


@pytest.mark.parametrize("top_k,top_p", [(64, 0.95), (8, 0.5), (1, 0.9), (50, 0.99), (64, 0.05), (3, 0.999)])
@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])
def test_matches_transformers_on_random_logits(top_k, top_p, scale):
    gen = torch.Generator().manual_seed(int(top_k * 1000 + top_p * 100 + scale))
    scores = torch.randn(64, 5000, generator=gen) * scale
    warper = assert_same(scores, top_k, top_p)
    assert warper.fallback_rows < 8  # the fast path decides almost every row


def test_lm_like_logits_rarely_need_the_reference_path():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(256, 20000, generator=gen) * 2.5  # heavy head after softmax, like a real LM
    scores[:, :40] += torch.linspace(8, 0, 40)
    warper = assert_same(scores, 64, 0.95)
    assert warper.fallback_rows <= 5


def test_ties_across_both_boundaries():
    gen = torch.Generator().manual_seed(2)
    scores = torch.randint(-4, 4, (128, 300), generator=gen).float()  # many exact ties everywhere
    assert_same(scores, 10, 0.9)
    assert_same(scores, 64, 0.5)
    flat = torch.zeros(4, 100)  # every token tied
    warper = assert_same(flat, 5, 0.3)
    assert warper.fallback_rows == 4


def test_k_larger_than_the_vocabulary_and_min_tokens_to_keep():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(16, 40, generator=gen) * 4
    assert_same(scores, 64, 0.9)
    assert_same(scores, 40, 0.9)
    assert_same(scores, 39, 0.9)
    assert_same(scores, 5, 0.01, keep=3)
    assert_same(scores, 2, 0.5, keep=4)  # min_tokens_to_keep above top_k widens top-k too


def test_masked_and_non_finite_rows():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(8, 1000, generator=gen) * 3
    scores[0, 10:] = -float("inf")  # fewer finite tokens than k, as a constraining processor leaves them
    scores[1, :] = -float("inf")
    scores[2, 5] = float("inf")
    scores[3, 7] = float("nan")
    want = reference(scores, 64, 0.95)
    got, _ = fused(scores, 64, 0.95)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


def test_arguments_are_validated_like_transformers():
    with pytest.raises(ValueError, match="top_k"):
        TopKTopPLogitsWarper(0, 0.9)
    with pytest.raises(ValueError, match="top_p"):
        TopKTopPLogitsWarper(5, 1.5)


def test_fuse_replaces_only_an_adjacent_top_k_top_p_pair():
    pair = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(64), TopPLogitsWarper(0.9)])
    fuse_topk_topp(pair)
    assert [type(p).__name__ for p in pair] == ["TemperatureLogitsWarper", "TopKTopPLogitsWarper"]
    assert pair[1].top_k == 64 and pair[1].top_p == 0.9
    lone = LogitsProcessorList([TopPLogitsWarper(0.9), TopKLogitsWarper(64)])  # wrong order: untouched
    fuse_topk_topp(lone)
    assert [type(p).__name__ for p in lone] == ["TopPLogitsWarper", "TopKLogitsWarper"]


def _processor_names(model, **config):
    from transformers import GenerationConfig

    processors = model._get_logits_processor(generation_config=GenerationConfig(do_sample=True, **config),
                                             input_ids_seq_length=4, device=torch.device("cpu"))
    return [type(p).__name__ for p in processors]


def test_install_is_idempotent_and_reaches_generate(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    uninstall_fast_topk_topp()
    try:
        assert "TopPLogitsWarper" in _processor_names(model, top_k=64, top_p=0.9)
        assert install_fast_topk_topp() is True
        assert install_fast_topk_topp() is False
        assert _processor_names(model, top_k=64, top_p=0.9, temperature=0.7) == [
            "TemperatureLogitsWarper", "TopKTopPLogitsWarper"]
        assert _processor_names(model, top_k=64, top_p=1.0) == ["TopKLogitsWarper"]  # nothing to fuse
    finally:
        uninstall_fast_topk_topp()
    assert "TopKTopPLogitsWarper" not in _processor_names(model, top_k=64, top_p=0.9)


def _sample(model, enc, seed, n=24):
    torch.manual_seed(seed)
    return model.generate(**enc, do_sample=True, top_k=64, top_p=0.95, temperature=1.0, max_new_tokens=n,
                          pad_token_id=0)


def test_same_seed_same_tokens_on_a_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    enc = tok(["An old pond", "Autumn wind over"], return_tensors="pt", padding=True)
    uninstall_fast_topk_topp()
    want = _sample(model, enc, seed=5)
    install_fast_topk_topp()
    try:
        got = _sample(model, enc, seed=5)
    finally:
        uninstall_fast_topk_topp()
    assert torch.equal(got, want)


@pytest.mark.slow
def test_same_seed_same_tokens_on_the_real_model(embedded):
    model, tok = embedded
    prompts = [f"Write a haiku about {t}." for t in ("rain", "the sea", "winter", "a cat", "dawn", "moss")]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    uninstall_fast_topk_topp()
    want = [_sample(model, enc, seed=s, n=32) for s in (0, 1)]
    install_fast_topk_topp()
    try:
        got = [_sample(model, enc, seed=s, n=32) for s in (0, 1)]
    finally:
        uninstall_fast_topk_topp()
    assert not torch.equal(want[0], want[1])  # sampling really samples
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_trl_grpo_rollouts_use_the_fused_warper(tiny_model_dir, tmp_path, monkeypatch):
    """TRL builds its own GenerationConfig and calls model.generate: the patch must reach it."""
    import trl.trainer.utils as trl_utils
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:  # Triton-less CPU torch
        from haiku_kit.train.common import TorchChunkedLogProb

        monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", TorchChunkedLogProb)
    calls = []
    original_call = TopKTopPLogitsWarper.__call__

    def counting_call(self, input_ids, scores):
        calls.append(scores.shape)
        return original_call(self, input_ids, scores)

    monkeypatch.setattr(TopKTopPLogitsWarper, "__call__", counting_call)
    prompts = [[{"role": "user", "content": f"Generate a haiku about {t}"}] for t in ("rain", "moss")]
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=4, max_steps=1, report_to="none",
                      top_k=64, top_p=0.95, temperature=1.0, save_strategy="no", log_completions=False)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          reward_funcs=lambda completions, **kw: [float(len(str(c))) for c in completions],
                          args=args, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    install_fast_topk_topp()
    try:
        trainer.train()
    finally:
        uninstall_fast_topk_topp()
    assert calls and all(shape[0] == 4 for shape in calls)  # one generate call for the step's 4 rollouts


def _patched() -> bool:
    from transformers.generation.utils import GenerationMixin

    return getattr(GenerationMixin._get_logits_processor, "_haiku_kit_fast_topk_topp", False)


def test_the_kits_generate_and_grpo_builder_install_it(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from training_helpers import FAST_REWARDS, rows, tiny_cfg

    from haiku_kit.generate import write as generate
    from haiku_kit.model import load as modeling
    from haiku_kit.train import grpo

    cfg = tiny_cfg(tiny_model_dir, tmp_path, FAST_REWARDS)
    model, tok = modeling.load_from_config(cfg)
    uninstall_fast_topk_topp()
    try:
        generate.generate(model, tok, ["An old pond"], max_new_tokens=2, progress=False)
        assert _patched()
        uninstall_fast_topk_topp()
        grpo.build_grpo_trainer(cfg, cfg.grpo, model, tok, Dataset.from_list(rows(4)), tmp_path / "grpo", "cpu")
        assert _patched()
    finally:
        uninstall_fast_topk_topp()
