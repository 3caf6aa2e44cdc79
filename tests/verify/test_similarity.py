"""MiniLM similarity: offline loading, process-wide cache, batching, embedding cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from haiku_kit.errors import ModelLoadError
from haiku_kit.verify import similarity as S


def test_embedded_path_is_a_sentence_transformers_folder():
    path = Path(S.embedded_minilm_path())
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").is_file()
    for alias in (None, "embedded", "sentence-transformers/all-MiniLM-L6-v2"):
        assert S.resolve_model(alias) == str(path)
    assert S.resolve_model("/some/other/model") == "/some/other/model"


def test_unloadable_model_names_the_model(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="not-a-model"):
        S.SimilarityScorer(str(empty), device="cpu")


@pytest.fixture(scope="module")
def scorer() -> S.SimilarityScorer:
    return S.get_scorer(device="cpu")


@pytest.mark.slow
def test_scorer_is_loaded_once_per_process(scorer):
    assert S.get_scorer(device="cpu") is scorer
    assert S.get_scorer("embedded", device="cpu") is scorer
    assert scorer.device == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert S.get_scorer() is scorer  # device None resolves to the CPU here


@pytest.mark.slow
def test_cosine_values(scorer):
    topics = ["autumn leaves", "autumn leaves", "the ocean"]
    poems = [
        "Red leaves drift and fall\nthe autumn wind carries them\nbare branches remain",
        "The server is down\nall the tests are failing now\nI will fix it soon",
        "the ocean",
    ]
    cos = S.cosine(topics, poems)
    assert all(type(c) is float for c in cos)
    assert cos[0] > cos[1] + 0.2
    assert cos[2] == pytest.approx(1.0, abs=1e-5)
    assert S.cosine([], []) == []
    with pytest.raises(ValueError, match="differ in length"):
        S.cosine(["a"], ["b", "c"])


@pytest.mark.slow
def test_matches_sentence_transformers_cos_sim(scorer):
    from sentence_transformers import util

    a, b = "winter moon", "cold light on the frozen pond"
    expected = float(util.cos_sim(scorer.model.encode(a), scorer.model.encode(b)))
    assert scorer.cosine([a], [b])[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_one_batched_call_and_cached_repeats(scorer, monkeypatch):
    calls = []
    real = scorer.model.encode

    def counting(texts, **kwargs):
        calls.append(list(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(scorer.model, "encode", counting)
    topics = ["batching topic"] * 64
    poems = [f"batched poem number {i}" for i in range(64)]
    first = scorer.cosine(topics, poems)
    assert len(calls) == 1 and len(calls[0]) == 65  # distinct texts only, in one call
    second = scorer.cosine(topics, poems)
    assert len(calls) == 1  # everything came from the cache
    assert first == second


@pytest.mark.slow
def test_cache_is_bounded_lru(scorer, monkeypatch):
    monkeypatch.setattr(scorer, "cache_size", 3)
    scorer.clear_cache()
    scorer.embed(["a", "b", "c"])
    scorer.embed(["a"])  # a is now the most recent
    scorer.embed(["d"])
    assert set(scorer._cache) == {"c", "a", "d"}
    scorer.clear_cache()


@pytest.mark.slow
def test_loads_with_the_hub_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = "from haiku_kit.verify.similarity import cosine; print(round(cosine(['sea'], ['sea'])[0], 3))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1.0"


@pytest.mark.slow
def test_bfloat16_option_stays_close_to_float32(scorer):
    fast = S.get_scorer(device="cpu", dtype="bfloat16")
    assert fast is not scorer and fast.dtype == "bfloat16"
    topics = ["autumn leaves", "the ocean", "city at night"]
    poems = ["red leaves drift and fall", "waves fold on the shore", "neon hums on wet streets"]
    exact, approx = scorer.cosine(topics, poems), fast.cosine(topics, poems)
    assert all(type(c) is float for c in approx)
    assert approx == pytest.approx(exact, abs=0.02)
