"""Prompt and completion text: the chat prompt for a topic, the text inside prompts and
completions, one normalisation and one measure of prompt copying.

Every module that reads a prompt, a completion or compares texts uses these, so training
rewards, the training monitor and the evaluation metrics measure the same thing the same way.
"""

from __future__ import annotations

import re
from typing import Any

from haiku_kit.errors import DataError

DEFAULT_TEMPLATE = "Generate a haiku about the following topic: {topic}"
# The reference's chat files start every user turn with this; the rest is the topic.
REFERENCE_PREFIX = "Generate a haiku about the following topic: "
PATTERN = (5, 7, 5)  # syllables per line of the haiku the kit asks for and checks
COPY_NGRAM = 3  # word n-grams compared by copy_fraction
COPY_THRESHOLD = 0.5  # copy_fraction at which an output counts as copying its prompt

_WORD = re.compile(r"[a-z0-9']+")


# --------------------------------------------------------------------------- prompts


def build_prompt(topic: str, template: str = DEFAULT_TEMPLATE,
                 system: str | None = None) -> list[dict[str, str]]:
    """The chat prompt for a topic: one user turn. `system` text is merged into that turn
    (Gemma's chat template has no system role)."""
    try:
        text = template.format(topic=topic)
    except (KeyError, IndexError, ValueError) as err:
        raise DataError(f"prompt template {template!r} must use only {{topic}} ({err})") from None
    if system:
        text = f"{system.strip()}\n\n{text}"
    return [{"role": "user", "content": text}]


def topic_from_prompt(text: str) -> str:
    """The topic of a reference-style user turn: the text after its fixed prompt prefix."""
    text = text.strip()
    text = text.removeprefix(REFERENCE_PREFIX.strip())
    return " ".join(text.split())


# --------------------------------------------------------------------------- message content


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise TypeError(f"message content must be text, got {type(content).__name__}")


def completion_text(completion: Any, strict: bool = True) -> str:
    """The text of one completion: a string, or the assistant content of a message list.

    strict: raise TypeError for anything else (None, numbers, dicts without content...), as
    rewards need; strict=False gives str(completion) instead, for logs that must show whatever
    came back.
    """
    try:
        if isinstance(completion, str):
            return completion
        if isinstance(completion, dict) and "content" in completion:
            return _content_text(completion["content"])
        if isinstance(completion, (list, tuple)) and all(isinstance(m, dict) for m in completion):
            parts = [_content_text(m.get("content")) for m in completion
                     if m.get("role", "assistant") == "assistant"]
            return "\n".join(p for p in parts if p)
        raise TypeError(
            f"a completion must be text or chat messages, got {type(completion).__name__}")
    except TypeError:
        if strict:
            raise
        return str(completion)


def prompt_text(prompt: Any) -> str:
    """All text of a prompt (string, or every message's content joined)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        return "\n".join(_content_text(m.get("content")) for m in prompt if isinstance(m, dict))
    return ""


# --------------------------------------------------------------------------- comparing texts


def words(text: str) -> list[str]:
    """Lowercase words: letters, digits and apostrophes."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """Lowercase words joined by single spaces, punctuation dropped: the key under which two
    texts count as the same (topic groups, near-duplicate and train-overlap checks)."""
    return " ".join(words(text))


def _ngrams(items: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def copy_fraction(poem: str, prompt: str, topic: str = "", n: int = COPY_NGRAM) -> float:
    """Share of the poem's word n-grams that also occur in the prompt, in [0, 1].

    Prompt n-grams made only of topic words are ignored: using the topic is the task, copying
    the instruction around it is the hack. Poems shorter than n words use their length as n.
    """
    poem_words = words(poem)
    if not poem_words:
        return 0.0
    n = min(n, len(poem_words))
    topic_words = set(words(topic))
    prompt_grams = {g for g in _ngrams(words(prompt), n) if not set(g) <= topic_words}
    grams = _ngrams(poem_words, n)
    return sum(g in prompt_grams for g in grams) / len(grams)


def copies_prompt(poem: str, prompt: str, topic: str = "") -> bool:
    """The poem is copied from its prompt's instruction (copy_fraction >= COPY_THRESHOLD)."""
    return copy_fraction(poem, prompt, topic) >= COPY_THRESHOLD
