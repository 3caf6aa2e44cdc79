"""Fused top-k/top-p: the same filtered scores as transformers' own warpers, and a draw among the kept
candidates with the same distribution as transformers' full-vocabulary draw (exact and chi-square tests)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from haiku_kit.generate import sampling
from haiku_kit.generate.sampling import (
    TopKTopPLogitsWarper,
    candidate_draw_active,
    draw_next_tokens,
    fuse_topk_topp,
    install_fast_topk_topp,
    sampling_probabilities,
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


# --------------------------------------------------------------------------- the draw among the candidates


def candidate_set(out):
    """Per row, the ids the patched draw can return for a fused warper's output `out`: its kept
    candidates, or the whole filtered row where transformers' warpers decided the row."""
    candidates = getattr(out, sampling._CANDIDATES, None)
    if candidates is None:  # the warper ran transformers' pair on every row (k >= vocabulary)
        return torch.isfinite(out)
    kept = torch.zeros_like(out, dtype=torch.bool)
    kept.scatter_(1, candidates.ids, torch.isfinite(candidates.values))
    kept[candidates.unsure] = torch.isfinite(out[candidates.unsure])
    return kept


def _random(rows, vocab, scale, seed):
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def _ties(rows, vocab, seed):
    return torch.randint(-4, 4, (rows, vocab), generator=torch.Generator().manual_seed(seed)).float()


def _masked():
    scores = _random(6, 1000, 3.0, 7)
    scores[0, 10:] = -float("inf")  # fewer finite tokens than k (a constraining processor before the warper)
    scores[1, :500] = -float("inf")
    return scores


DISTRIBUTION_CASES = {  # name: (logits, top_k, top_p, min_tokens_to_keep)
    "random k64 p0.95": (lambda: _random(64, 5000, 3.0, 11), 64, 0.95, 1),
    "random k8 p0.5": (lambda: _random(64, 5000, 3.0, 12), 8, 0.5, 1),
    "random k1": (lambda: _random(16, 5000, 3.0, 13), 1, 0.9, 1),
    "random peaked k50 p0.99": (lambda: _random(64, 5000, 12.0, 14), 50, 0.99, 1),
    "ties k10 p0.9": (lambda: _ties(128, 300, 15), 10, 0.9, 1),
    "ties k64 p0.5": (lambda: _ties(128, 300, 16), 64, 0.5, 1),
    "all tied": (lambda: torch.zeros(4, 100), 5, 0.3, 1),
    "tiny top_p": (lambda: _random(32, 2000, 2.0, 17), 64, 1e-4, 1),
    "tiny top_p, min_tokens_to_keep 3": (lambda: _random(32, 2000, 2.0, 18), 5, 0.01, 3),
    "min_tokens_to_keep above top_k": (lambda: _random(32, 2000, 2.0, 19), 2, 0.5, 4),
    "top_k above the vocabulary": (lambda: _random(16, 40, 4.0, 20), 64, 0.9, 1),
    "top_k one below the vocabulary": (lambda: _random(16, 40, 4.0, 21), 39, 0.9, 1),
    "masked rows": (_masked, 64, 0.95, 1),
}


@pytest.mark.parametrize("case", DISTRIBUTION_CASES)
def test_candidate_draw_has_transformers_distribution_exactly(case):
    """The kept set equals the finite entries of transformers' TopK -> TopP output, and the renormalised
    candidate probabilities equal the softmax of that output (to float rounding of the normalising sum)."""
    make, top_k, top_p, keep = DISTRIBUTION_CASES[case]
    scores = make()
    want = reference(scores, top_k, top_p, keep)  # transformers' own warpers
    out, _ = fused(scores, top_k, top_p, keep)
    assert torch.equal(candidate_set(out), torch.isfinite(want))
    got = sampling_probabilities(out)
    want_probs = want.softmax(-1)
    assert torch.equal(got > 0, want_probs > 0)
    torch.testing.assert_close(got, want_probs, rtol=1e-6, atol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(scores.size(0)), rtol=0, atol=1e-6)
    tokens = draw_next_tokens(out, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(want.gather(1, tokens[:, None])).all()  # every draw inside transformers' kept set


def test_candidate_draw_is_used_and_rows_transformers_decided_are_drawn_whole():
    scores = _ties(64, 300, 22)
    scores[:32] = _random(32, 300, 3.0, 23)  # 32 rows the fused path decides, 32 mostly tied
    out, warper = fused(scores, 10, 0.9)
    assert 0 < warper.fallback_rows < 64
    draw_next_tokens(out)
    assert warper.candidate_draws == 64 - warper.fallback_rows
    assert warper.full_row_draws == warper.fallback_rows
    plain = scores.softmax(-1)  # a tensor no fused warper returned: torch's own softmax and multinomial
    assert torch.equal(sampling_probabilities(scores), plain)
    assert draw_next_tokens(scores).shape == (64,)


def test_all_filtered_row_fails_like_transformers():
    scores = torch.full((2, 300), -float("inf"))
    scores[0] = _random(1, 300, 3.0, 24)
    out, _ = fused(scores, 10, 0.9)
    with pytest.raises(RuntimeError):  # transformers' softmax gives NaN there and multinomial refuses it
        draw_next_tokens(out)


DRAWS = 100_000
ALPHA = 1e-3


def chi_square_rejects(tokens, probs) -> bool:
    """Pearson's chi-square test of draws against probabilities at level ALPHA; a draw of a token
    with probability 0 is a rejection by itself."""
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    support = probs > 0
    if counts[~support].sum() > 0:
        return True
    expected = probs[support].double() * tokens.numel()
    assert expected.min() >= 5, "the chi-square approximation needs >= 5 expected draws per token"
    statistic = float(((counts[support] - expected) ** 2 / expected).sum())
    df = int(support.sum()) - 1
    try:
        from scipy.stats import chi2

        critical = float(chi2.isf(ALPHA, df))
    except ImportError:  # Wilson-Hilferty: the chi-square quantile from the normal one (z at 1 - ALPHA)
        z = 3.090232
        critical = df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3
    return statistic > critical


def draws(sampler, scores, seed, chunk=25_000):
    """DRAWS samples, in chunks of rows that all hold the same logits."""
    gen = torch.Generator().manual_seed(seed)
    batch = scores.expand(chunk, -1).contiguous()
    return torch.cat([sampler(batch, gen) for _ in range(DRAWS // chunk)])


def _tied_at_the_top_k_cut():
    scores = torch.full((1, 100), -3.0)
    scores[0, :8] = torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0, 1.0, 1.0, 1.0])  # top_k 5 cuts through four tied 1.0
    return scores


CHI_SQUARE_CASES = {  # name: (logits, top_k, top_p, drawn among the candidates?)
    "distinct logits": (lambda: _random(1, 100, 1.5, 25), 20, 0.8, True),
    "tie at the top-k cut (transformers' warpers decide the row)": (_tied_at_the_top_k_cut, 5, 0.9, False),
}


@pytest.mark.parametrize("case", CHI_SQUARE_CASES)
def test_chi_square_draws_match_transformers_and_wrong_draws_are_rejected(case):
    make, top_k, top_p, among_candidates = CHI_SQUARE_CASES[case]
    scores = make()
    want = reference(scores, top_k, top_p)
    probs = want.softmax(-1)[0]
    warper = TopKTopPLogitsWarper(top_k, top_p)

    def candidate_draw(batch, gen):
        return draw_next_tokens(warper(None, batch), generator=gen)

    def transformers_draw(batch, gen):
        return torch.multinomial(reference(batch, top_k, top_p).softmax(-1), 1, generator=gen).squeeze(1)

    def top_p_skipped(batch, gen):
        only_k = TopKLogitsWarper(top_k)(None, batch)
        return torch.multinomial(only_k.softmax(-1), 1, generator=gen).squeeze(1)

    def not_renormalised(batch, gen):
        # kept tokens keep their top-k probabilities; the mass top-p removed lands on the likeliest token
        p = TopKLogitsWarper(top_k)(None, batch).softmax(-1).masked_fill(~torch.isfinite(want), 0.0)
        p[:, p[0].argmax()] += 1 - p.sum(-1)
        return torch.multinomial(p, 1, generator=gen).squeeze(1)

    assert not chi_square_rejects(draws(candidate_draw, scores, seed=1), probs)
    drawn = warper.candidate_draws if among_candidates else warper.full_row_draws
    assert drawn == DRAWS and warper.candidate_draws + warper.full_row_draws == DRAWS
    assert not chi_square_rejects(draws(transformers_draw, scores, seed=2), probs)  # the test is calibrated
    assert chi_square_rejects(draws(top_p_skipped, scores, seed=3), probs)
    assert chi_square_rejects(draws(not_renormalised, scores, seed=4), probs)


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


def test_candidate_draw_is_on_for_the_installed_transformers():
    """If a transformers upgrade changes how `_sample` picks tokens, the install keeps the full-row draw
    (exact, slower) and this test says so."""
    from transformers.generation.utils import GenerationMixin

    uninstall_fast_topk_topp()
    try:
        assert sampling._draws_as_expected(GenerationMixin._sample)
        install_fast_topk_topp()
        assert candidate_draw_active()
        install_fast_topk_topp(candidate_draw=False)  # an already installed patch only changes the setting
        assert not candidate_draw_active()
        install_fast_topk_topp()  # as the kit's generate and GRPO builder call it: the choice stays
        assert not candidate_draw_active()
    finally:
        uninstall_fast_topk_topp()  # also back to the default
    assert not candidate_draw_active()
    install_fast_topk_topp()
    try:
        assert candidate_draw_active()
    finally:
        uninstall_fast_topk_topp()

    def picks_otherwise(self, logits_processor, next_token_scores):
        probs = next_token_scores.softmax(-1)
        return torch.multinomial(probs, 1), probs

    assert not sampling._draws_as_expected(picks_otherwise)


def _record_warpers(monkeypatch):
    """The fused warpers that generate calls build, for their draw counters."""
    made = []
    original = sampling.fuse_topk_topp

    def recording(processors):
        processors = original(processors)
        made.extend(p for p in processors if isinstance(p, TopKTopPLogitsWarper))
        return processors

    monkeypatch.setattr(sampling, "fuse_topk_topp", recording)
    return made


def _sample(model, enc, seed=5, n=8, **config):
    torch.manual_seed(seed)
    settings = {"top_k": 16, "top_p": 0.6, "temperature": 0.7, **config}
    return model.generate(**enc, do_sample=True, max_new_tokens=n, pad_token_id=0, return_dict_in_generate=True,
                          output_scores=True, output_logits=True, **settings)


def assert_tokens_kept(out, prompt_length, top_k=16, top_p=0.6, temperature=0.7, eos=(1, 106)):
    """Every generated token lies in transformers' top-k/top-p set of its step (raw logits through
    transformers' own warpers); rows stop being checked once they produced an end token."""
    new = out.sequences[:, prompt_length:]
    finished = torch.zeros(new.size(0), dtype=torch.bool)
    for step, logits in enumerate(out.logits):
        want = reference(TemperatureLogitsWarper(temperature)(None, logits.clone()), top_k, top_p)
        assert torch.equal(out.scores[step], want)  # the fused warper's scores are transformers' bit for bit
        token = new[:, step]
        kept = torch.isfinite(want.gather(1, token[:, None])).squeeze(1)
        assert (kept | finished).all(), f"step {step}: a token outside the top-k/top-p set"
        finished |= torch.isin(token, torch.tensor(eos))
    return new


def test_generate_draws_only_kept_tokens_with_and_without_the_patch(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.utils import GenerationMixin

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    enc = tok(["An old pond", "Autumn wind over", "Moss", "Frog"], return_tensors="pt", padding=True)
    made = _record_warpers(monkeypatch)
    uninstall_fast_topk_topp()
    original_sample = GenerationMixin._sample
    install_fast_topk_topp()
    try:
        got = _sample(model, enc)
        assert len(made) == 1 and made[0].candidate_draws > 0
        assert made[0].candidate_draws + made[0].full_row_draws == 4 * len(got.logits)
        new = assert_tokens_kept(got, enc["input_ids"].shape[1])
        again = _sample(model, enc)
        assert torch.equal(again.sequences, got.sequences)  # seeded: the same tokens for the same seed
        assert not torch.equal(_sample(model, enc, seed=6).sequences, got.sequences)
        assert len(set(new.flatten().tolist())) > 4  # it samples, not one token over and over

        # a processor after the warper (renormalize_logits appends LogitNormalization): transformers' draw
        made.clear()
        after = _sample(model, enc, n=4, renormalize_logits=True)
        assert made and made[0].candidate_draws == 0 and made[0].full_row_draws == 0
        assert after.sequences.shape[1] == enc["input_ids"].shape[1] + 4
    finally:
        uninstall_fast_topk_topp()
    assert GenerationMixin._sample is original_sample
    made.clear()
    plain = _sample(model, enc, n=4)  # uninstalled: transformers' own warpers and draw
    assert not made
    assert_tokens_kept(plain, enc["input_ids"].shape[1])


def test_generate_falls_back_to_the_full_row_draw_when_sample_changed(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    enc = tok(["An old pond"], return_tensors="pt")
    made = _record_warpers(monkeypatch)
    monkeypatch.setattr(sampling, "_draws_as_expected", lambda sample: False)
    uninstall_fast_topk_topp()
    install_fast_topk_topp()
    try:
        assert not candidate_draw_active()
        out = _sample(model, enc, n=6)
    finally:
        uninstall_fast_topk_topp()
    assert made and made[0].candidate_draws == 0  # the fused warper still runs, transformers draws
    assert_tokens_kept(out, enc["input_ids"].shape[1])


@pytest.mark.slow
def test_candidate_draw_on_the_real_model(embedded, monkeypatch):
    model, tok = embedded
    prompts = [f"Write a haiku about {t}." for t in ("rain", "the sea", "winter", "a cat", "dawn", "moss")]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    made = _record_warpers(monkeypatch)
    install_fast_topk_topp()
    try:
        outs = [_sample(model, enc, seed=s, n=32, top_k=64, top_p=0.95, temperature=1.0) for s in (0, 1)]
    finally:
        uninstall_fast_topk_topp()
    assert not torch.equal(outs[0].sequences, outs[1].sequences)  # sampling really samples
    assert all(w.candidate_draws > 0 for w in made)
    for out in outs:
        assert_tokens_kept(out, enc["input_ids"].shape[1], top_k=64, top_p=0.95, temperature=1.0,
                           eos=tuple(model.generation_config.eos_token_id or ()) + (106,))


def test_trl_grpo_rollouts_use_the_fused_warper(tiny_model_dir, tmp_path, monkeypatch):
    """TRL builds its own GenerationConfig and calls model.generate: the patch must reach it."""
    import trl.trainer.utils as trl_utils
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:  # Triton-less CPU torch
        from haiku_kit.train.common import TorchChunkedLogProb

        monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", TorchChunkedLogProb)
    calls, warpers = [], []
    original_call = TopKTopPLogitsWarper.__call__

    def counting_call(self, input_ids, scores):
        calls.append(scores.shape)
        warpers.append(self)
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
    assert sum(w.candidate_draws + w.full_row_draws for w in set(warpers)) == 4 * len(calls)
    assert sum(w.candidate_draws for w in set(warpers)) > 0  # drawn among the kept candidates


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
        assert _patched() and candidate_draw_active()
        uninstall_fast_topk_topp()
        grpo.build_grpo_trainer(cfg, cfg.grpo, model, tok, Dataset.from_list(rows(4)), tmp_path / "grpo", "cpu")
        assert _patched() and candidate_draw_active()
    finally:
        uninstall_fast_topk_topp()
