"""The one path from a config to a model + tokenizer ready for TRL (SFT/GRPO) or generation,
and saving what was trained.

`load_from_config(cfg, adapter, trainable)` is what training, evaluation, `haiku-kit eval` and
`haiku-kit write` use; `load_model(...)` is the same loader with explicit arguments. Both
backends (model/backends.py) apply the same LoRA settings. Nothing heavy is imported at module import
time: the Unsloth branch imports unsloth first thing, transformers only inside functions.

Does a saved LoRA adapter fit a base model? Checked before any weights are loaded.

The base model is built on the meta device from its config.json (no weights, about a second),
and every tensor in adapter_model.safetensors is matched, by name and shape (read from the file's
header, not its data), to the module it adapts. A mismatch is one ModelLoadError line naming the
adapter, the base model it declares, the first module that does not fit, and what to do, instead
of peft's size-mismatch traceback or its message about missing modules.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from haiku_kit.config import LoraSettings, RunConfig
from haiku_kit.errors import ModelLoadError
from haiku_kit.model.backends import (
    GPU_INSTALL_HINT,
    backend_for,
    choose_precision,
    gpu_capabilities,
    import_backend,
    unsloth_import_order_problem,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
)
from haiku_kit.model.chat import prepare_tokenizer
from haiku_kit.model.english_vocab import FOLDER_PREFIX as ENGLISH_FOLDER_PREFIX
from haiku_kit.model.english_vocab import NAME as EMBEDDED_ENGLISH
from haiku_kit.ranks import launched, local_rank

__all__ = ['adapter_misfit', 'check_adapter_fits']

logger = logging.getLogger(__name__)

_PREFIX = "base_model.model."
_LORA_PARTS = {
    "lora_A": lambda shape, base: shape[1] == base[1],  # (r, in) against (out, in)
    "lora_B": lambda shape, base: shape[0] == base[0],  # (out, r)
    "lora_embedding_A": lambda shape, base: shape[1] == base[0],  # (r, vocab) against (vocab, d)
    "lora_embedding_B": lambda shape, base: shape[0] == base[1],  # (d, r)
}


def _adapter_shapes(adapter_dir: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as fh:
        return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118


def _base_shapes(base_source: str) -> dict[str, list[int]]:
    """Parameter name -> shape of the base model, built on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: list(p.shape) for name, p in model.named_parameters()}


def _rank_of(declared: dict, module: str) -> int | None:
    """The LoRA rank adapter_config.json declares for a module (its rank_pattern, else r)."""
    pattern = declared.get("rank_pattern") or {}
    if isinstance(pattern, dict):
        for key, rank in pattern.items():
            if module == key or module.endswith(f".{key}") or re.fullmatch(str(key), module):
                return rank if isinstance(rank, int) else None
    rank = declared.get("r")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


def adapter_misfit(
    adapter_dir: Path,
    base_shapes: dict[str, list[int]],
    declared: dict | None = None,
    ranks_only: dict[str, list[int]] | None = None,
) -> str | None:
    """Why the adapter does not fit a base with these parameter shapes (or its own
    adapter_config.json's rank, when `declared` is given), or None when it fits. `ranks_only`:
    the adapter's tensor shapes, checked against `declared` alone (no base model)."""
    shapes = ranks_only if ranks_only is not None else _adapter_shapes(adapter_dir)
    for key, shape in sorted(shapes.items()):
        name = key.removeprefix(_PREFIX)
        parts = name.split(".")
        lora = next((p for p in parts if p in _LORA_PARTS), None)
        if ranks_only is not None:
            if lora is None or len(shape) != 2:
                continue
            module = ".".join(parts[: parts.index(lora)])
            problem = _rank_problem(declared, module, lora, shape)
            if problem:
                return problem
            continue
        if lora is None:  # a fully saved module (modules_to_save): same name, same shape
            base = base_shapes.get(name)
            if base is None:
                return f"it holds {name}, which the base model lacks"
            if base != shape:
                return f"its {name} has shape {shape}, the base model's {base}"
            continue
        module = ".".join(parts[: parts.index(lora)])
        base = base_shapes.get(f"{module}.weight")
        if base is None:
            return f"it adapts {module}, which the base model lacks"
        if len(shape) != 2 or len(base) != 2 or not _LORA_PARTS[lora](shape, base):
            return f"its {module} expects a {_shown(lora, shape)} layer, the base model's is {base}"
        problem = _rank_problem(declared, module, lora, shape)
        if problem:
            return problem
    return None


def _rank_problem(declared: dict | None, module: str, lora: str, shape: list[int]) -> str | None:
    """peft builds the layers from the config's rank, then copies the saved tensors in: a saved
    rank that differs fails there as one size-mismatch line per tensor."""
    rank = _rank_of(declared, module) if declared is not None else None
    saved = shape[0] if lora in ("lora_A", "lora_embedding_A") else shape[1]
    if rank is not None and saved != rank:
        return (f"adapter_model.safetensors holds rank {saved} for {module}, but "
                f"adapter_config.json declares r={rank}: the two files are from different "
                "adapters")
    return None


def _shown(lora: str, shape: list[int]) -> str:
    if lora == "lora_A":
        return f"{shape[1]}-input"
    if lora == "lora_B":
        return f"{shape[0]}-output"
    return f"{shape}"


def check_adapter_fits(adapter_dir: str | Path, base_source: str, base_name: str) -> None:
    """ModelLoadError (one line) unless the adapter in adapter_dir fits the base model at
    base_source (a folder or hub id; base_name is how the user named it)."""
    adapter_dir = Path(adapter_dir)
    declared = read_adapter_config(adapter_dir)
    declared_base = declared.get("base_model_name_or_path") or "not stated"
    try:
        base_shapes = _base_shapes(base_source)
    except (OSError, ValueError, KeyError) as err:  # the loader itself will say what is wrong
        logger.debug(
            "cannot build %s on the meta device to check %s: %s", base_source, adapter_dir, err
        )
        return
    try:
        problem = adapter_misfit(adapter_dir, base_shapes, declared)
    except Exception as err:
        if not isinstance(err, (OSError, ValueError)) and type(err).__name__ != "SafetensorError":
            raise
        raise ModelLoadError(
            f"adapter {adapter_dir}: unreadable adapter_model.safetensors ({err})"
        ) from None
    if problem and problem.startswith("adapter_model.safetensors"):
        raise ModelLoadError(f"adapter {adapter_dir}: {problem}")
    if problem:
        raise ModelLoadError(
            f"adapter {adapter_dir} was trained on a different base model than {base_name} "
            f"(it declares {declared_base}): {problem}; load it with the model it was trained "
            "on (--set model.name=...) or train a new adapter"
        )


# -------------------- modeling --------------------

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
META_FILE = "haiku_kit_model.json"
EMBEDDED = "embedded"
EMBEDDED_FOLDER_PREFIX = "gemma-3-270m-base-v"  # embedded.MODEL_FOLDER without its version


def peft_lora_config(lora: LoraSettings):
    """The LoRA settings as peft's LoraConfig (the hf backend; Unsloth: unsloth_peft_kwargs)."""
    from peft import LoraConfig

    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


# --------------------------------------------------------------------------- sources


def resolve_model_source(model: str | os.PathLike) -> str:
    """Local folder (embedded cache or a user path) or a hub name, as a string."""
    model = os.fspath(model)
    if model == EMBEDDED:
        from haiku_kit.model.embedded import embedded_model_dir

        return str(embedded_model_dir())
    if model == EMBEDDED_ENGLISH:
        from haiku_kit.model.english_vocab import english_model_dir

        return str(english_model_dir())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json")
        return str(path)
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") > 1
    if looks_like_path:
        raise ModelLoadError(f"model path {model!r} does not exist")
    return model


MAX_ADAPTER_CONFIG_BYTES = 1 << 20  # peft's are about 1 kB


def read_adapter_config(adapter_dir: str | os.PathLike, lora: bool = True) -> dict:
    """adapter_config.json as a dict (with a LoRA rank `r` and `lora_alpha` when `lora`), or
    ModelLoadError naming the file: too big, not UTF-8, not JSON, nested too deep, not an
    object, no rank."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_ADAPTER_CONFIG_BYTES + 1)
        if len(raw) > MAX_ADAPTER_CONFIG_BYTES:
            raise ValueError(f"over {MAX_ADAPTER_CONFIG_BYTES:,} bytes")
        config = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ModelLoadError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: JSON nested too deeply") from None
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: unreadable ({err})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: a JSON object was expected, not a {type(config).__name__}")
    for key in ("r", "lora_alpha") if lora else ():
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ModelLoadError(f"{path}: {key}={value!r}; a LoRA adapter's config gives a "
                                 "positive rank r and lora_alpha")
    return config


def check_adapter_dir(adapter: str | os.PathLike) -> Path:
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"adapter folder {path} does not exist")
    missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"adapter folder {path} is not a saved LoRA adapter: missing {', '.join(missing)}"
        )
    return path


def validate_adapter(adapter: str | os.PathLike, model: str | None = None) -> Path:
    """The adapter folder, checked as a unit without loading any weights: both files there, the
    config readable with a rank, the safetensors header readable and its ranks the config's,
    and (given `model`, a name or folder) its tensor shapes those of that base model.
    ModelLoadError naming the file otherwise."""
    path = check_adapter_dir(adapter)
    declared = read_adapter_config(path)
    try:
        shapes = _adapter_shapes(path)
    except Exception as err:
        if not isinstance(err, (OSError, ValueError)) and type(err).__name__ != "SafetensorError":
            raise
        raise ModelLoadError(
            f"adapter {path}: unreadable adapter_model.safetensors ({err})") from None
    # the same rank rule as adapter_misfit, with no base model to compare against
    problem = adapter_misfit(path, {}, declared, ranks_only=shapes)
    if problem:
        raise ModelLoadError(f"adapter {path}: {problem}")
    if model is not None:
        check_adapter_fits(path, resolve_model_source(model), os.fspath(model))
    return path


def lora_from_adapter(adapter_dir: Path) -> LoraSettings:
    cfg = read_adapter_config(adapter_dir)
    targets = cfg.get("target_modules") or LoraSettings().target_modules
    return LoraSettings(
        r=int(cfg["r"]),
        alpha=int(cfg["lora_alpha"]),
        dropout=float(cfg.get("lora_dropout", 0.0)),
        # Unsloth saves its modules as one regex: reload exactly those, not a default list.
        target_modules=targets if isinstance(targets, str) else sorted(targets),
    )


def adapter_base_model(adapter: str | os.PathLike) -> str:
    """The base model a saved adapter was trained on: "embedded", "embedded-english", a local
    folder or a hub id.

    Read from the adapter's own adapter_config.json (base_model_name_or_path); the embedded
    models' cache folders (any build version, any cache root) read as their names, and an
    adapter that names no base model reads as "embedded", the kit's default."""
    path = check_adapter_dir(adapter)
    config = read_adapter_config(path, lora=False)
    base = str(config.get("base_model_name_or_path") or "").strip()
    if base == EMBEDDED_ENGLISH or Path(base).name.startswith(ENGLISH_FOLDER_PREFIX):
        return EMBEDDED_ENGLISH
    if not base or base == EMBEDDED or Path(base).name.startswith(EMBEDDED_FOLDER_PREFIX):
        return EMBEDDED
    return base


# --------------------------------------------------------------------------- loading


def _torch_dtype(dtype: Any, on_gpu: bool, model_type: str | None = None):
    import torch

    if dtype is None or dtype == "auto":  # by compute capability, not is_bf16_supported (emulation)
        chosen = choose_precision("cuda", gpu_capabilities(), model_type) if on_gpu else choose_precision("cpu")
        return getattr(torch, chosen.load_dtype)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ModelLoadError(f"dtype must be one of {sorted(names)} or None, got {dtype!r}")
    return names[dtype]


def _hub_unreachable_reason() -> str | None:
    """Why the Hugging Face Hub cannot be reached, checked quickly (the hub client itself
    retries for minutes when there is no network)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no"):
        return "HF_HUB_OFFLINE is set"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=5).close()
    except OSError as exc:
        return f"{endpoint.hostname} is unreachable: {exc}"
    return None


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _from_pretrained(loader, source: str, what: str, **kwargs):
    """from_pretrained with the cache first, and a clear error when nothing can be found."""
    kwargs.setdefault("trust_remote_code", False)
    if Path(source).is_dir():
        return loader.from_pretrained(source, **kwargs)
    if _in_hub_cache(source):
        try:
            return loader.from_pretrained(source, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            pass
    try:
        reason = _hub_unreachable_reason()
        if reason:
            raise OSError(reason)
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load {what} {source!r}: it is not a local folder, not in the Hugging Face "
            f"cache, and could not be downloaded (offline?). Pass model='embedded' or a local "
            f"model folder. ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc


def _load_hf(source, load_in_4bit, dtype, max_seq_length):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = torch.cuda.is_available()
    model_type = None
    if on_gpu and dtype in (None, "auto"):  # Gemma 3 on a T4 must not load in float16
        from transformers import AutoConfig

        model_type = _from_pretrained(AutoConfig, source, "model config").model_type
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, on_gpu, model_type), "use_safetensors": True}
    if load_in_4bit:
        if not on_gpu:
            raise ModelLoadError("load_in_4bit=True needs a CUDA GPU (bitsandbytes); none found")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelLoadError(f"load_in_4bit=True needs bitsandbytes: {GPU_INSTALL_HINT}")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
    if on_gpu:
        # Under torchrun / accelerate launch each process trains on its own GPU (LOCAL_RANK);
        # current_device() is still 0 in all of them until accelerate sets it.
        kwargs["device_map"] = {"": local_rank() if launched() else torch.cuda.current_device()}
    model = _from_pretrained(AutoModelForCausalLM, source, "model", **kwargs)
    tokenizer = _from_pretrained(AutoTokenizer, source, "tokenizer")
    prepare_tokenizer(model, tokenizer, max_seq_length)
    return model, tokenizer


def _wrap_hf(model, lora: LoraSettings | None, adapter: Path | None, seed: int, load_in_4bit):
    if lora is None and adapter is None:
        return model
    import torch
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    torch.manual_seed(seed)
    return get_peft_model(model, peft_lora_config(lora))


def _load_unsloth(source, load_in_4bit, dtype, max_seq_length, lora, adapter, seed, fast=False, share=0.5,
                  checkpointing="auto"):
    problem = unsloth_import_order_problem(sys.modules)
    if problem:
        warnings.warn(problem, stacklevel=3)
    import unsloth  # noqa: F401  (must precede the transformers-using imports below)
    from unsloth import FastModel

    shape = lora_from_adapter(adapter) if adapter is not None else lora  # the LoRA that will be built
    rank = shape.r if shape is not None else LoraSettings().r  # vLLM's LoRA slots must fit it
    kwargs = unsloth_load_kwargs(source, max_seq_length, load_in_4bit, dtype, fast, share, rank)
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype, on_gpu=True)
    model, tokenizer = FastModel.from_pretrained(**kwargs)
    prepare_tokenizer(model, tokenizer, max_seq_length)
    if adapter is not None:
        # Same LoRA layout as the saved adapter through Unsloth's fast path, then its weights.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        model = FastModel.get_peft_model(model, **unsloth_peft_kwargs(shape, seed, checkpointing))
        result = set_peft_model_state_dict(model, load_file(str(adapter / ADAPTER_FILES[1])))
        if getattr(result, "unexpected_keys", None):
            raise ModelLoadError(
                f"adapter {adapter} does not match the model: "
                f"{len(result.unexpected_keys)} unexpected weights"
            )
    elif lora is not None:
        model = FastModel.get_peft_model(model, **unsloth_peft_kwargs(lora, seed, checkpointing))
    return model, tokenizer


def load_model(
    model: str | os.PathLike = "embedded",
    backend: str = "auto",
    load_in_4bit: bool = False,
    lora: LoraSettings | Mapping[str, Any] | None = LoraSettings(),  # noqa: B008 - never mutated
    max_seq_length: int = 512,
    adapter: str | os.PathLike | None = None,
    dtype: Any = None,
    seed: int = 3407,
    fast_inference: bool = False,
    gpu_memory_utilization: float = 0.5,
    gradient_checkpointing: str = "auto",
):
    """(model, tokenizer) ready for TRL.

    ``lora``: settings for a fresh LoRA adapter, or None for the plain model. ``adapter``: a
    saved LoRA adapter folder, loaded trainable instead of a fresh one. ``dtype``: None picks
    fp32 on CPU and, on a GPU, by compute capability (precision.choose_precision).
    ``fast_inference`` (Unsloth): load a vLLM engine too, using that share of GPU memory.
    ``gradient_checkpointing`` (Unsloth): model.gradient_checkpointing, the LoRA model's
    use_gradient_checkpointing (on the hf backend TRL's argument decides, train/common.py)."""
    chosen = import_backend(backend)  # Unsloth first: the adapter checks below import transformers
    if isinstance(lora, Mapping):
        lora = LoraSettings.from_dict(lora)
    adapter_dir = check_adapter_dir(adapter) if adapter is not None else None
    source = resolve_model_source(model)
    if adapter_dir is not None:  # one clear line, not a size-mismatch traceback, on a wrong base
        check_adapter_fits(adapter_dir, source, os.fspath(model))
    if chosen == "unsloth":
        net, tokenizer = _load_unsloth(
            source, load_in_4bit, dtype, max_seq_length, lora, adapter_dir, seed,
            fast_inference, gpu_memory_utilization, gradient_checkpointing,
        )
    else:
        base, tokenizer = _load_hf(source, load_in_4bit, dtype, max_seq_length)
        net = _wrap_hf(base, lora, adapter_dir, seed, load_in_4bit)
    for peft_cfg in (getattr(net, "peft_config", None) or {}).values():  # the base it sits on now
        peft_cfg.base_model_name_or_path = source
    net._haiku_kit_backend = chosen
    net._haiku_kit_source = os.fspath(model)
    return net, tokenizer


def load_from_config(cfg: RunConfig, adapter: str | Path | None = None, trainable: bool = True,
                     rollouts: bool = False):
    """The config's model + tokenizer: with a trainable LoRA (fresh, or `adapter`) for training,
    or with `adapter` only (or none) for evaluation and writing.

    rollouts=True: the model GRPO samples from. Only that load starts Unsloth's vLLM engine
    (model.fast_inference): each engine takes gpu_memory_utilization of the GPU, so an engine per
    load (SFT, every eval, export) left the second one in a process without memory, and the
    kit's evaluation generates with HF generate, which never uses it."""
    m = cfg.model
    return load_model(
        m.name,
        backend=backend_for(cfg),
        load_in_4bit=m.load_in_4bit,
        dtype=None if m.dtype == "auto" else m.dtype,
        lora=m.lora if trainable else None,
        max_seq_length=m.max_seq_length,
        adapter=str(adapter) if adapter else None,
        seed=cfg.seed,
        fast_inference=m.fast_inference and rollouts,
        gpu_memory_utilization=m.gpu_memory_utilization,
        gradient_checkpointing=m.gradient_checkpointing,
    )


# --------------------------------------------------------------------------- saving


def backend_of(model) -> str:
    found = getattr(model, "_haiku_kit_backend", None)
    if found:
        return found
    return "unsloth" if hasattr(model, "save_pretrained_gguf") else "hf"


def _write_meta(model, path: Path, kind: str) -> None:
    meta = {
        "kind": kind,
        "base_model": getattr(model, "_haiku_kit_source", None),
        "backend": backend_of(model),
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def save_adapter(model, tokenizer, path: str | os.PathLike, state_dict=None) -> Path:
    """Save the LoRA adapter (safetensors) and tokenizer into path; `state_dict`: the model's
    weights gathered from the processes that hold a shard of them (ZeRO-3, FSDP)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise ModelLoadError("save_adapter needs a LoRA-wrapped model (load_model with lora=...)")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(str(out), safe_serialization=True, save_embedding_layers=False, **extra)
    tokenizer.save_pretrained(str(out))
    _write_meta(model, out, "adapter")
    return out


def save_merged(model, tokenizer, path: str | os.PathLike) -> Path:
    """Save base + LoRA merged into 16-bit weights (safetensors) with the tokenizer."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if backend_of(model) == "unsloth":
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
        return out
    import torch
    from peft import PeftModel

    if getattr(model, "is_loaded_in_4bit", False):
        raise ModelLoadError(
            "cannot merge into a 4-bit model on the hf backend: reload the base in 16-bit "
            "with adapter=... (load_in_4bit=False) and save_merged that"
        )
    # Merge a copy: merge_and_unload mutates the model, and callers keep training/evaluating.
    merged = copy.deepcopy(model)
    if isinstance(merged, PeftModel):
        merged = merged.merge_and_unload()
    merged = merged.to(torch.bfloat16)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    _write_meta(model, out, "merged_16bit")
    return out


def save_gguf(model, tokenizer, path: str | os.PathLike, quantization: str = "q4_k_m") -> Path:
    """Export a GGUF through Unsloth (llama.cpp); Unsloth backend only."""
    if backend_of(model) != "unsloth":
        raise ModelLoadError(
            "save_gguf needs the unsloth backend (it drives llama.cpp through Unsloth): load "
            f"with backend='unsloth' on a CUDA machine ({GPU_INSTALL_HINT}), or save_merged "
            "and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained_gguf(str(out), tokenizer, quantization_method=quantization)
    return out
