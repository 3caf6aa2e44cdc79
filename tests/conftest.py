"""Shared fixtures: the real embedded 270M model, a tiny random Gemma 3, the shared data dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def _share_threads_between_workers() -> None:
    """Under pytest-xdist, give each worker its share of the cores: torch's default of one thread
    per core in every worker oversubscribes the machine and slows the suite down."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)


_share_threads_between_workers()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """`make test` distributes tests one by one (`--dist loadgroup`) so that the two workers
    finish together; the tests of a file that builds a module-scoped fixture (a trained smoke
    run, a web server, a loaded model) stay on one worker, which builds it once."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope == "module" for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (REPO.parent / "shared"); skips when absent."""
    path = REPO.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The cached HF folder of the embedded model (built on first use)."""
    from haiku_kit.model.embedded import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def embedded(embedded_dir):
    """(model, tokenizer) of the real embedded Gemma 3 270M: fp32, CPU, no LoRA, eval mode."""
    from haiku_kit.model.load import load_model

    model, tokenizer = load_model("embedded", backend="hf", lora=None)
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir) -> Path:
    """A tiny randomly initialised Gemma3ForCausalLM (hidden 64, 2 layers, real 262k vocab,
    ~17M params) saved as safetensors with the embedded tokenizer and chat template.
    Loadable with load_model(model=str(tiny_model_dir))."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    out = tmp_path_factory.mktemp("tiny-gemma3")
    config = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = [1, 106]
    model.generation_config.pad_token_id = 0
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (embedded_dir / name).is_file():
            shutil.copy2(embedded_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def small_splits(tmp_path_factory) -> Path:
    """The sft/rl/eval splits of the first 48 embedded rows, built without MiniLM (a second, not
    the data stage's 20 s): `--set data.splits_dir=...` for CLI runs whose subject is not data."""
    from training_helpers import rows

    from haiku_kit.data.splits import build_splits

    out = tmp_path_factory.mktemp("small-splits")
    build_splits(rows(48), out, min_similarity=None, near_topic_cosine=None)
    return out


# --------------------------------------------------------------------------- the pipeline, without papermill


def _write_outputs(stage: str, run_dir: Path, cfg) -> None:
    from haiku_kit.runs import ARTIFACTS, RunPaths, stage_outputs

    for param in stage_outputs(stage, cfg):
        folder = RunPaths(run_dir).artifact(param)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ARTIFACTS[param].marker).write_text("{}")


@pytest.fixture
def fake_notebooks(monkeypatch):
    """Replace papermill with a stand-in that records calls and writes each stage's outputs."""
    from haiku_kit import pipeline
    from haiku_kit.config import resolve_config

    calls: list[tuple[str, dict]] = []
    fail_at: dict[str, str] = {}

    def fake(src, out, parameters, stage, log_output=False):
        calls.append((stage, parameters))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}")
        if fail_at.get(stage) == "raise":
            raise pipeline.StageFailed(stage, out, "ValueError", "boom", cell=3, source="x = 1 / 0")
        if fail_at.get(stage) != "silent":
            cfg = resolve_config(parameters["preset"], parameters["overrides"], parameters["run_dir"])
            _write_outputs(stage, Path(parameters["run_dir"]), cfg)

    monkeypatch.setattr(pipeline, "execute_notebook", fake)
    return calls, fail_at


@pytest.fixture(scope="session")
def english(embedded_dir):
    """(model, tokenizer) of embedded-english, the same model on its English-trimmed
    vocabulary (english_vocab.py; built on first use): fp32, CPU, no LoRA, eval mode."""
    from haiku_kit.model.load import load_model

    model, tokenizer = load_model("embedded-english", backend="hf", lora=None)
    model.eval()
    return model, tokenizer
