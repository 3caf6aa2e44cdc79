"""text.py: prompt and completion text, one normalisation, one copy measure."""

from __future__ import annotations

import pytest

from haiku_kit.verify import text


def test_completion_text():
    assert text.completion_text("abc") == "abc"
    assert text.completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "abc"}]}]
    assert text.completion_text(parts) == "abc"
    for bad in (None, 3, {"x": 1}):
        with pytest.raises(TypeError):
            text.completion_text(bad)


def test_completion_text_for_logs_never_raises():
    assert text.completion_text(None, strict=False) == "None"
    assert text.completion_text({"x": 1}, strict=False) == "{'x': 1}"


def test_copies_prompt():
    prompt = "Generate a haiku about the following topic: autumn rain"
    assert text.copies_prompt("Generate a haiku about the following topic: autumn rain", prompt)
    assert text.copies_prompt("the following topic autumn rain", prompt)
    assert not text.copies_prompt("autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake", prompt)
    assert not text.copies_prompt("", prompt)




def test_copy_fraction_ignores_the_topic_itself():
    prompt = "Generate a haiku about the following topic: autumn rain on the roof"
    assert text.copy_fraction("autumn rain on the roof", prompt, "autumn rain on the roof") == 0.0
    assert text.copy_fraction("a haiku about the following", prompt) == 1.0


def test_one_normalisation():
    assert text.normalize("  The Old-Pond, 1999!  ") == "the old pond 1999"
    assert text.normalize("Don't") == "don't" and text.words("A b") == ["a", "b"]
