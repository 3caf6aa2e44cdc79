"""The kit's Unsloth and TRL calls checked against the real source, without a GPU.

The pinned unsloth and unsloth_zoo wheels (versions read from pyproject.toml's [gpu] extra) are
downloaded without dependencies into pytest's cache (.pytest_cache/d/unsloth-wheels; reruns reuse
them) and read with `ast`, never imported. The kit's keywords are read from the kit's own call
sites (kit_calls.py), not copied here. Skips only when the package index cannot be reached.
"""

from __future__ import annotations

import dataclasses

import pytest
from kit_calls import CallSite, call_sites
from unsloth_source import RegistryUnreachable, SourceTree, download_wheel, pinned_version

from haiku_kit.config import LoraSettings
from haiku_kit.model import backends
from haiku_kit.model import backends as precision

# Kit call site (callee, receiver) -> how Unsloth provides it: ("method", class) or ("bound", attr).
UNSLOTH_CALLS = {
    ("from_pretrained", "FastModel"): ("method", "FastModel"),
    ("get_peft_model", "FastModel"): ("method", "FastModel"),
    ("save_pretrained_merged", None): ("bound", "save_pretrained_merged"),
    ("save_pretrained_gguf", None): ("bound", "save_pretrained_gguf"),
}


@pytest.fixture(scope="module")
def unsloth_tree(request) -> SourceTree:
    cache = request.config.cache.mkdir("unsloth-wheels")
    try:
        wheels = [download_wheel(pkg, pinned_version(pkg), cache) for pkg in ("unsloth", "unsloth_zoo")]
    except RegistryUnreachable as err:
        pytest.skip(str(err))
    return SourceTree.from_wheels(*wheels)


def kit_sites(callee: str, receiver: str | None) -> list[CallSite]:
    sites = call_sites(callee, receiver)
    assert sites, f"haiku_kit no longer calls {receiver or ''}.{callee}: update UNSLOTH_CALLS"
    for site in sites:
        assert not site.splats, f"{site.where}: cannot read the keywords of **{site.splats}"
    return sites


def contract_problems(tree: SourceTree) -> list[str]:
    """One line per keyword or positional argument the kit passes that Unsloth does not take."""
    problems = []
    for (callee, receiver), (kind, name) in UNSLOTH_CALLS.items():
        if kind == "method":
            signatures = [tree.method_signature(name, callee)]
        else:
            signatures = tree.bound_method_signatures(name)
        for site in kit_sites(callee, receiver):
            for sig in signatures:
                # A method called on a class (staticmethod) gets all positionals; a bound one its own.
                missing = sig.missing(site.keywords)
                if missing:
                    problems.append(f"{site.where} passes {missing} to {callee}, not parameters of {sig.where}")
                if site.positional > len(sig.positional):
                    problems.append(f"{site.where} passes {site.positional} positional arguments to {callee}; "
                                    f"{sig.where} takes {len(sig.positional)}")
    return problems


def force_float32_problems(tree: SourceTree) -> list[str]:
    zoo = tree.literal("unsloth_zoo/model_lists.py", "FORCE_FLOAT32")
    fallback = tree.literal("unsloth/models/loader.py", "_FORCE_FLOAT32_FALLBACK")
    return [f"unsloth forces float32 for {entry!r}; haiku_kit.model.backends.FORCE_FLOAT32 lacks it"
            for entry in dict.fromkeys(zoo + fallback) if entry not in precision.FORCE_FLOAT32]


# --------------------------------------------------------------------------- the real source


def test_every_unsloth_keyword_the_kit_passes_exists(unsloth_tree):
    assert contract_problems(unsloth_tree) == []


def test_kit_keywords_are_read_from_its_own_builders():
    # Guards the reader itself: the builders' keys must come through the ** splats.
    (load,) = kit_sites("from_pretrained", "FastModel")
    everything = backends.unsloth_load_kwargs("m", 512, False, fast_inference=True)
    assert {"fast_inference", "gpu_memory_utilization", "max_lora_rank"} <= set(everything) <= load.keywords
    peft_sites = kit_sites("get_peft_model", "FastModel")
    assert all(set(backends.unsloth_peft_kwargs(LoraSettings(), 0)) <= s.keywords for s in peft_sites)


def test_kit_follows_unsloths_float32_list(unsloth_tree):
    assert force_float32_problems(unsloth_tree) == []


def test_kit_knows_which_modules_unsloth_must_precede(unsloth_tree):
    critical = unsloth_tree.literal("unsloth/_gpu_init.py", "critical_modules")
    assert set(critical) <= set(backends.UNSLOTH_PATCHED_MODULES)


# --------------------------------------------------------------------------- doctored copies


@pytest.mark.parametrize(
    ("owner", "method", "param", "kit_call"),
    [
        ("FastModel", "from_pretrained", "max_seq_length", "from_pretrained"),
        ("FastBaseModel", "get_peft_model", "lora_alpha", "get_peft_model"),  # reached by delegation
        ("unsloth_generic_save_pretrained_merged", None, "save_method", "save_pretrained_merged"),
        ("unsloth_save_pretrained_gguf", None, "quantization_method", "save_pretrained_gguf"),
    ],
)
def test_a_renamed_unsloth_keyword_fails_the_contract(unsloth_tree, owner, method, param, kit_call):
    doctored = unsloth_tree.rename_parameter(owner, method, param, param + "_renamed")
    problems = contract_problems(doctored)
    assert problems, f"renaming {owner}.{method}({param}) went unnoticed"
    assert all(kit_call in p and repr(param) in p for p in problems), problems


def test_fewer_positional_parameters_fail_the_contract(unsloth_tree):
    # save_merged passes (path, tokenizer) positionally; a release dropping `tokenizer` breaks it.
    doctored = unsloth_tree.replaced(
        "unsloth/save.py",
        "def unsloth_generic_save_pretrained_merged(\n    self,\n    save_directory: Union[str, os.PathLike],\n"
        "    tokenizer = None,\n",
        "def unsloth_generic_save_pretrained_merged(\n    self,\n    save_directory: Union[str, os.PathLike],\n"
        "    *,\n    tokenizer = None,\n",
    )
    assert any("positional arguments to save_pretrained_merged" in p for p in contract_problems(doctored))


def test_a_new_float32_architecture_in_unsloth_fails(unsloth_tree):
    doctored = unsloth_tree.replaced("unsloth_zoo/model_lists.py", "FORCE_FLOAT32 = [",
                                     'FORCE_FLOAT32 = [\n    "newarch_moe",')
    assert force_float32_problems(doctored) == [
        "unsloth forces float32 for 'newarch_moe'; haiku_kit.model.backends.FORCE_FLOAT32 lacks it"
    ]


# --------------------------------------------------------------------------- TRL configs


@pytest.mark.parametrize("config_name", ["SFTConfig", "GRPOConfig"])
def test_every_trl_config_field_the_kit_sets_exists(config_name):
    import trl

    fields = {f.name for f in dataclasses.fields(getattr(trl, config_name))}
    for site in kit_sites(config_name, None):
        assert "output_dir" in site.keywords  # reached through the shared-arguments helper
        assert site.keywords - fields == set(), f"{site.where}: not {config_name} fields"
