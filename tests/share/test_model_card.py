"""The model card renders the run folder's real numbers and says what is missing."""

from __future__ import annotations

import json

import pytest
import yaml

from haiku_kit.evaluate.scoring import evaluate
from haiku_kit.share import model_card

POEMS = [
    "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake",
    "the cat sleeps all day\nin the sun",
]


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    for name, poems in (("sft", POEMS[1:]), ("grpo", POEMS[:1])):
        evaluate(poems, ["autumn rain"] * len(poems), similarity=False, n_boot=50).save(
            run / "eval" / name)
    (run / "grpo" / "adapter").mkdir(parents=True)
    (run / "grpo" / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "gemma-3-270m"}))
    (run / "grpo" / "effective.yaml").write_text(yaml.safe_dump({
        "learning_rate": 3e-5, "num_generations": 8, "beta": 0.0,
        "rewards": {"names": ["haiku_reward", "similarity_reward"], "weights": [1.0, 0.5]}}))
    (run / "sft").mkdir()
    (run / "sft" / "effective.yaml").write_text(yaml.safe_dump({"learning_rate": 2e-4}))
    (run / "data").mkdir()
    (run / "data" / "manifest.json").write_text(json.dumps(
        {"source": "embedded", "source_sha256": "ab" * 32, "counts": {"sft": 3}}))
    (run / "env.json").write_text(json.dumps({"trl": "1.15.0", "transformers": "5.17.0"}))
    return run


def test_card_holds_the_runs_real_numbers(run):
    facts = model_card.card_facts(run, "grpo", "LoRA adapter", "me/haiku-270m")
    card = model_card.render_card(facts)
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "gemma-3-270m" and front["library_name"] == "peft"
    # scored without similarity: the judge's four columns cannot be known, then Haiku
    assert "| grpo | 1 | n/a | n/a | n/a | n/a | 1.0000 [1.0000, 1.0000]" in card  # the valid poem
    assert "| sft | 1 | n/a | n/a | n/a | n/a | 0.0000 [0.0000, 0.0000]" in card  # the 2-line one
    assert "`haiku_reward` × 1" in card and "`similarity_reward` × 0.5" in card
    assert "`learning_rate`: 3e-05" in card and "`learning_rate`: 0.0002" in card
    assert "`num_generations`: 8" in card and "`trl`: 1.15.0" in card
    assert "ab" * 32 in card
    assert "me/haiku-270m" in card


def test_card_says_what_is_missing(tmp_path):
    card = model_card.render_card(model_card.card_facts(tmp_path, "sft", "merged 16-bit", "a/b"))
    assert "No evaluation in this run folder." in card
    assert card.count("not recorded in the run folder") == 3
    assert "pipeline(\"text-generation\", model=\"a/b\")" in card


@pytest.mark.parametrize("kind,needle", [("GGUF q8_0", "llama-cli -hf u/r"),
                                          ("LoRA adapter", "write_haiku"),
                                          ("merged 16-bit", "pipeline(")])
def test_usage_snippet_matches_what_was_exported(kind, needle):
    assert needle in model_card.usage_snippet(kind, "u/r", "base")


def test_adapter_usage_snippet_imports_what_it_calls():
    """The snippet a pushed card carries must run against this kit: its import resolves and the
    call's keywords exist (an old module path here broke every card once)."""
    import ast
    import importlib
    import inspect

    snippet = model_card.usage_snippet("LoRA adapter", "u/r", "google/gemma-3-1b-it")
    code = snippet.split("```python\n", 1)[1].split("```", 1)[0]
    tree = ast.parse(code)
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert imports, code
    module = importlib.import_module(imports[0].module)
    func = getattr(module, imports[0].names[0].name)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == func.__name__)
    params = inspect.signature(func).parameters
    assert all(k.arg in params for k in call.keywords), code
    assert "google/gemma-3-1b-it" in code
