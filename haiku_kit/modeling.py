"""Load a causal LM + tokenizer ready for TRL (SFT/GRPO), with LoRA, on Unsloth or plain HF.

``backend="auto"`` uses Unsloth only when CUDA is available and unsloth is installed, else
transformers + peft. Both apply the same LoRA settings. Nothing heavy is imported at module
import time: Unsloth must be imported before transformers/trl to patch them, so the Unsloth
branch imports it first thing, and transformers is only imported inside functions here.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from haiku_kit.errors import ModelLoadError

log = logging.getLogger(__name__)

END_OF_TURN = "<end_of_turn>"
BACKENDS = ("auto", "unsloth", "hf")
GPU_INSTALL_HINT = 'pip install "haiku-kit[gpu]"'
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Modules Unsloth must be imported before in order to patch them.
UNSLOTH_PATCHED_MODULES = ("transformers", "trl", "peft")
META_FILE = "haiku_kit_model.json"


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoraSettings.r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSettings.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ValueError("LoraSettings.target_modules must not be empty")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LoRA setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )


# --------------------------------------------------------------------------- backend choice


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is required in practice
        return False
    return torch.cuda.is_available()


def unsloth_installed() -> bool:
    # find_spec does not import unsloth (importing it has side effects on transformers).
    return importlib.util.find_spec("unsloth") is not None


def choose_backend(backend: str, cuda: bool, unsloth: bool) -> str:
    """Pure backend resolution: "unsloth" or "hf", or ModelLoadError saying what is missing."""
    if backend not in BACKENDS:
        raise ModelLoadError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "hf":
        return "hf"
    if backend == "auto":
        return "unsloth" if cuda and unsloth else "hf"
    if not cuda:
        raise ModelLoadError(
            "backend='unsloth' needs a CUDA GPU, and none is available here; "
            "use backend='hf' (or 'auto') on CPU"
        )
    if not unsloth:
        raise ModelLoadError(
            f"backend='unsloth' needs the unsloth package, which is not installed; "
            f"install it with: {GPU_INSTALL_HINT}  (or use backend='hf')"
        )
    return "unsloth"


def resolve_backend(backend: str = "auto") -> str:
    """The backend to use on this machine: "unsloth" or "hf"."""
    if backend not in BACKENDS:  # fail before probing CUDA
        raise ModelLoadError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return choose_backend(backend, cuda=cuda_available(), unsloth=unsloth_installed())


def import_backend(backend: str = "auto") -> str:
    """Resolve `backend`; for Unsloth, import it now. Call this before anything that may import
    transformers/trl (e.g. MiniLM in the data stage), because Unsloth must patch them first."""
    resolved = resolve_backend(backend)
    if resolved == "unsloth":
        import unsloth  # noqa: F401
    return resolved


def unsloth_import_order_problem(loaded_modules: Iterable[str]) -> str | None:
    """Warning text when unsloth would be imported after modules it needs to patch."""
    loaded = set(loaded_modules)
    if "unsloth" in loaded:
        return None
    early = [name for name in UNSLOTH_PATCHED_MODULES if name in loaded]
    if not early:
        return None
    return (
        f"{', '.join(early)} imported before unsloth: Unsloth cannot patch them, so training "
        "may be slower or use more memory. Call haiku_kit.modeling.load_model (or "
        "`import unsloth`) before importing transformers/trl/peft."
    )


def unsloth_load_kwargs(
    model_name: str, max_seq_length: int, load_in_4bit: bool, dtype: Any = None
) -> dict[str, Any]:
    """Arguments for unsloth.FastModel.from_pretrained (Gemma 3 GRPO notebook style)."""
    return {
        "model_name": model_name,
        "max_seq_length": max_seq_length,
        "dtype": dtype,
        "load_in_4bit": load_in_4bit,
        "load_in_8bit": False,
        "full_finetuning": False,
    }


def unsloth_peft_kwargs(lora: LoraSettings, seed: int) -> dict[str, Any]:
    """Arguments for unsloth.FastModel.get_peft_model, the same LoRA as the hf backend."""
    return {
        "finetune_vision_layers": False,
        "finetune_language_layers": True,
        "finetune_attention_modules": True,
        "finetune_mlp_modules": True,
        "target_modules": list(lora.target_modules),
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "bias": "none",
        "random_state": seed,
    }


# --------------------------------------------------------------------------- sources


def resolve_model_source(model: str | os.PathLike) -> str:
    """Local folder (embedded cache or a user path) or a hub name, as a string."""
    model = os.fspath(model)
    if model == "embedded":
        from haiku_kit.embedded import embedded_model_dir

        return str(embedded_model_dir())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json")
        return str(path)
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") > 1
    if looks_like_path:
        raise ModelLoadError(f"model path {model!r} does not exist")
    return model


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


def lora_from_adapter(adapter_dir: Path) -> LoraSettings:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    targets = cfg.get("target_modules") or LoraSettings().target_modules
    if isinstance(targets, str):  # peft stores a regex for some configs; keep our defaults
        targets = LoraSettings().target_modules
    return LoraSettings(
        r=int(cfg["r"]),
        alpha=int(cfg["lora_alpha"]),
        dropout=float(cfg.get("lora_dropout", 0.0)),
        target_modules=tuple(sorted(targets)),
    )


# --------------------------------------------------------------------------- tokenizer fixes


def stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end a completion: the model's eos ids, the tokenizer's eos and <end_of_turn>
    when the vocabulary has it (Gemma: 1 and 106). Without 106, chat completions never end."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    ids += [tok.eos_token_id, end_id if end_id != tok.unk_token_id else None]
    return [i for i in dict.fromkeys(ids) if isinstance(i, int)]


def prepare_tokenizer(model, tokenizer, max_seq_length: int | None = None):
    """Gemma 3 chat template, pad token and <end_of_turn> as a stop token."""
    from haiku_kit.gguf_tokenizer import GEMMA3_CHAT_TEMPLATE

    tok = getattr(tokenizer, "tokenizer", tokenizer)  # Unsloth may hand back a processor
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    has_end = end_id is not None and end_id != tok.unk_token_id
    template = getattr(tok, "chat_template", None)
    if template is None or (model_type.startswith("gemma3") and "generation" not in template):
        if not has_end:
            raise ModelLoadError(
                f"tokenizer of {model_type or 'this model'} has no chat template and no "
                f"{END_OF_TURN} token to build one with"
            )
        tok.chat_template = GEMMA3_CHAT_TEMPLATE
        if tok is not tokenizer and hasattr(tokenizer, "chat_template"):
            tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = (
            "<pad>"
            if tok.convert_tokens_to_ids("<pad>") not in (None, tok.unk_token_id)
            else tok.eos_token
        )
    if max_seq_length:
        tok.model_max_length = max_seq_length
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = stop_token_ids(model, tok)
        gen.pad_token_id = tok.pad_token_id
    return tokenizer


# --------------------------------------------------------------------------- loading


def _torch_dtype(dtype: Any, on_gpu: bool):
    import torch

    if dtype is None or dtype == "auto":
        if not on_gpu:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
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
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, on_gpu), "use_safetensors": True}
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
        kwargs["device_map"] = {"": torch.cuda.current_device()}
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
    return get_peft_model(model, lora.peft_config())


def _load_unsloth(source, load_in_4bit, dtype, max_seq_length, lora, adapter, seed):
    problem = unsloth_import_order_problem(sys.modules)
    if problem:
        warnings.warn(problem, stacklevel=3)
    import unsloth  # noqa: F401  (must precede the transformers-using imports below)
    from unsloth import FastModel

    kwargs = unsloth_load_kwargs(source, max_seq_length, load_in_4bit, dtype)
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype, on_gpu=True)
    model, tokenizer = FastModel.from_pretrained(**kwargs)
    prepare_tokenizer(model, tokenizer, max_seq_length)
    if adapter is not None:
        # Same LoRA layout as the saved adapter through Unsloth's fast path, then its weights.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        model = FastModel.get_peft_model(
            model, **unsloth_peft_kwargs(lora_from_adapter(adapter), seed)
        )
        result = set_peft_model_state_dict(model, load_file(str(adapter / ADAPTER_FILES[1])))
        if getattr(result, "unexpected_keys", None):
            raise ModelLoadError(
                f"adapter {adapter} does not match the model: "
                f"{len(result.unexpected_keys)} unexpected weights"
            )
    elif lora is not None:
        model = FastModel.get_peft_model(model, **unsloth_peft_kwargs(lora, seed))
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
):
    """(model, tokenizer) ready for TRL.

    ``lora``: settings for a fresh LoRA adapter, or None for the plain model. ``adapter``: a
    saved LoRA adapter folder, loaded trainable instead of a fresh one. ``dtype``: None picks
    fp32 on CPU and bf16 on GPU."""
    chosen = resolve_backend(backend)
    if isinstance(lora, Mapping):
        lora = LoraSettings.from_dict(lora)
    adapter_dir = check_adapter_dir(adapter) if adapter is not None else None
    source = resolve_model_source(model)
    if chosen == "unsloth":
        net, tokenizer = _load_unsloth(
            source, load_in_4bit, dtype, max_seq_length, lora, adapter_dir, seed
        )
    else:
        base, tokenizer = _load_hf(source, load_in_4bit, dtype, max_seq_length)
        net = _wrap_hf(base, lora, adapter_dir, seed, load_in_4bit)
    net._haiku_kit_backend = chosen
    net._haiku_kit_source = os.fspath(model)
    return net, tokenizer


# --------------------------------------------------------------------------- saving


def _backend_of(model) -> str:
    found = getattr(model, "_haiku_kit_backend", None)
    if found:
        return found
    return "unsloth" if hasattr(model, "save_pretrained_gguf") else "hf"


def _write_meta(model, path: Path, kind: str) -> None:
    meta = {
        "kind": kind,
        "base_model": getattr(model, "_haiku_kit_source", None),
        "backend": _backend_of(model),
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def save_adapter(model, tokenizer, path: str | os.PathLike) -> Path:
    """Save the LoRA adapter (safetensors) and tokenizer into path."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise ModelLoadError("save_adapter needs a LoRA-wrapped model (load_model with lora=...)")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    _write_meta(model, out, "adapter")
    return out


def save_merged(model, tokenizer, path: str | os.PathLike) -> Path:
    """Save base + LoRA merged into 16-bit weights (safetensors) with the tokenizer."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if _backend_of(model) == "unsloth":
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
    if _backend_of(model) != "unsloth":
        raise ModelLoadError(
            "save_gguf needs the unsloth backend (it drives llama.cpp through Unsloth): load "
            f"with backend='unsloth' on a CUDA machine ({GPU_INSTALL_HINT}), or save_merged "
            "and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained_gguf(str(out), tokenizer, quantization_method=quantization)
    return out
