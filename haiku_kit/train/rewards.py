"""GRPO reward functions for haiku, a registry of them, and RewardSpec (names + weights).

Every reward has TRL's GRPOTrainer signature `f(prompts, completions, **kwargs) -> list[float]`:
completions are plain text or conversational (`[{"role": "assistant", "content": ...}]`), the
topic comes from the dataset column `kwargs["topic"]` (never parsed out of the prompt), and the
result is always a list of plain Python floats. The function's `__name__` is the registry name
and the name TRL logs as `rewards/<name>/mean`.

Each reward scores the poem that `haiku.extract_poem` finds in the completion (think blocks,
preambles, fences... stripped), checked with our syllable verifier.

Robustness (one decorator, `reward` below): a reward never raises into the trainer. Completions that
are not text (None, ints, dicts), empty, longer than MAX_COMPLETION_CHARS, or garbage (no
letter or digit in the poem) get the reward's documented `floor` (`f.floor`). An internal
error is logged once per reward function (logging.warning, with the offending sample
truncated) and the sample is scored as the floor. No reward returns None:
TRL reads None as "this reward does not apply to this sample", and every reward here applies
to every sample (a non-haiku gets 0 from `gated_similarity`, not None).

Speed: the extraction and the verifier's check are memoised per completion text, so the
rewards of one batch share that work, and similarity uses one batched, cached MiniLM call.

Make a batch scoring function a safe TRL reward: it never raises into the trainer.

`@reward(floor=...)` wraps `f(prompts, completions, **columns) -> list`: the result is always
one plain float per completion; when the batch fails, samples are re-scored one by one so only
the offending ones get the floor; the first failure of each reward is logged once (with the
sample truncated), later ones are counted in ERROR_COUNTS.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from haiku_kit.config import REWARD_PRESETS
from haiku_kit.errors import ConfigError
from haiku_kit.evaluate.metrics import pyphen_counts, pyphen_is_haiku
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.judge import fluency_problems
from haiku_kit.verify.text import PATTERN, completion_text, copy_fraction, prompt_text, words

log = logging.getLogger("haiku_kit.train.rewards")

_warned: set[str] = set()
ERROR_COUNTS: dict[str, int] = {}


def reset_error_log() -> None:
    """Forget which rewards already logged an error (tests; a new training run)."""
    _warned.clear()
    ERROR_COUNTS.clear()


def _truncate(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _as_float(value: Any, floor: float) -> float:
    if hasattr(value, "item"):  # torch / numpy scalars
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return floor
    return value + 0.0 if math.isfinite(value) else floor  # + 0.0 turns -0.0 into 0.0


def reward(floor: float) -> Callable[[Callable], Callable]:
    """Make a batch scoring function a safe TRL reward with this floor value.

    The wrapped function may raise; the wrapper then re-scores sample by sample so only the
    offending samples get the floor, logs the first failure of this reward once, and always
    returns one plain float per completion.
    """

    def decorate(fn: Callable) -> Callable:
        name = fn.__name__

        def score(prompts, completions, kwargs) -> list[float]:
            out = fn(prompts, completions, **kwargs)
            if len(out) != len(completions):
                raise ValueError(f"returned {len(out)} scores for {len(completions)} completions")
            return [_as_float(v, floor) for v in out]

        @functools.wraps(fn)
        def wrapper(prompts=None, completions=None, **kwargs) -> list[float]:
            completions = list(completions or [])
            n = len(completions)
            prompts = list(prompts) if prompts is not None else [""] * n
            try:
                return score(prompts, completions, kwargs)
            except Exception:
                log.debug(
                    "reward %s: batch failed, re-scoring sample by sample", name, exc_info=True
                )
            results = []
            for i in range(n):
                one = {k: _slice(v, i, n) for k, v in kwargs.items()}
                try:
                    results.append(score(prompts[i : i + 1], completions[i : i + 1], one)[0])
                except Exception as err:  # noqa: BLE001 - a reward never raises into the trainer
                    _report(name, completions[i], err, floor)
                    results.append(floor)
            return results

        wrapper.floor = floor
        return wrapper

    return decorate


def _slice(value: Any, i: int, n: int) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == n:
        return value[i : i + 1]
    return value


def _report(name: str, sample: Any, err: Exception, floor: float) -> None:
    ERROR_COUNTS[name] = ERROR_COUNTS.get(name, 0) + 1
    if name in _warned:
        return
    _warned.add(name)
    log.warning(
        "reward %s failed (%s: %s) on completion %s; scored as its floor %s "
        "(later errors of this reward are counted in rewards.ERROR_COUNTS, not logged)",
        name,
        type(err).__name__,
        err,
        _truncate(sample),
        floor,
    )


# -------------------- rewards --------------------

log = logging.getLogger(__name__)

PATTERN_SYLLABLES = sum(PATTERN)  # 17
MAX_COMPLETION_CHARS = 10_000  # longer completions are runaway generations: scored as floor
SYLLABLE_DISTANCE_CAP = 2 * PATTERN_SYLLABLES  # the raw distance reward never goes below -34
MAX_POEM_WORDS = PATTERN_SYLLABLES  # a 5-7-5 poem cannot have more words than syllables
MAX_POEM_CHARS = 150
FORMAT_PENALTY_PER_KIND = 0.5  # per kind of wrapping stripped (preamble, fence, title...)

_similarity_settings: dict[str, str | None] = {"model": None, "device": None, "dtype": None}


def configure_similarity(
    model: str | None = None, device: str | None = None, dtype: str | None = None
) -> None:
    """Choose the sentence encoder (None: bundled MiniLM), its device (e.g. the trainer's) and
    dtype (None: float32; "bfloat16" is faster on CPUs with AMX, see similarity.py)."""
    _similarity_settings.update(
        model=model, device=None if device is None else str(device), dtype=dtype
    )


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Analysis:
    """What every reward needs to know about one completion text."""

    extraction: hk.Extraction
    check: hk.HaikuCheck

    @property
    def poem(self) -> str:
        return self.extraction.poem


@functools.lru_cache(maxsize=8192)
def analyze(text: str) -> Analysis:
    """extract_poem + check, memoised so the rewards of one batch share the work."""
    extraction = hk.extract_poem(text)
    return Analysis(extraction, hk.check(extraction.poem, PATTERN))


_HAS_WORD = re.compile(r"[^\W_]")


def _analyses(completions: Sequence[Any]) -> list[Analysis | None]:
    """One Analysis per completion; None where the completion earns the floor."""
    out: list[Analysis | None] = []
    for completion in completions:
        try:
            text = completion_text(completion)
        except TypeError:
            out.append(None)
            continue
        if not text.strip() or len(text) > MAX_COMPLETION_CHARS:
            out.append(None)
            continue
        result = analyze(text)
        # No letter or digit at all (empty, symbols, control bytes): garbage, scored as floor.
        out.append(result if _HAS_WORD.search(result.poem) else None)
    return out


def _topics(kwargs: dict, n: int) -> list[str]:
    topics = kwargs.get("topic")
    if topics is None:
        raise KeyError(
            "the dataset has no 'topic' column: similarity rewards need it (kwargs['topic'])"
        )
    if isinstance(topics, str):
        topics = [topics] * n
    if len(topics) != n:
        raise ValueError(f"got {len(topics)} topics for {n} completions")
    return ["" if t is None else str(t) for t in topics]


# --------------------------------------------------------------------------- rewards


@reward(floor=0.0)
def haiku_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the extracted poem is a 5-7-5 haiku (3 lines), else 0.0. Floor 0.0.

    The reference's `reward_haiku` (there with pyphen; here with our verifier).
    """
    return [0.0 if a is None else float(a.check.is_haiku) for a in _analyses(completions)]


@reward(floor=-1.0)
def line_count_penalty(prompts, completions, **kwargs) -> list[float]:
    """0.0 when the poem has exactly 3 lines, else -1.0 (the reference's `reward_three_lines`,
    in its final form). Floor -1.0."""
    return [
        -1.0 if a is None or len(a.check.lines) != len(PATTERN) else 0.0
        for a in _analyses(completions)
    ]


@reward(floor=0.0)
def syllable_reward(prompts, completions, **kwargs) -> list[float]:
    """Dense syllable reward in [0, 1]: 1 - min(distance, 17) / 17.

    `distance` is the verifier's total syllable error (closest pronunciation per line, plus
    haiku.LINE_COUNT_PENALTY per missing or extra line); 17 = syllables in 5-7-5. Floor 0.0.
    """
    return [
        0.0 if a is None else 1.0 - min(a.check.distance, PATTERN_SYLLABLES) / PATTERN_SYLLABLES
        for a in _analyses(completions)
    ]


@reward(floor=0.0)
def line_exact_reward(prompts, completions, **kwargs) -> list[float]:
    """Share of the three lines whose syllable count is exactly on target (0.0 unless the poem
    has three lines). Floor 0.0.

    Between the dense distance and the all-or-nothing haiku reward: a group whose samples all
    miss somewhere still ranks the one with two exact lines above the one with none.
    """
    out = []
    for a in _analyses(completions):
        if a is None or len(a.check.lines) != len(PATTERN):
            out.append(0.0)
        else:
            out.append(sum(1 for e in a.check.line_errors if e == 0) / len(PATTERN))
    return out


@reward(floor=-float(SYLLABLE_DISTANCE_CAP))
def syllable_distance(prompts, completions, **kwargs) -> list[float]:
    """Raw dense syllable reward: -distance, capped at -34 (2 x 17). Floor -34.0."""
    return [
        -float(SYLLABLE_DISTANCE_CAP)
        if a is None
        else -float(min(a.check.distance, SYLLABLE_DISTANCE_CAP))
        for a in _analyses(completions)
    ]


def _cosines(topics: list[str], poems: list[str]) -> list[float]:
    if not poems:  # nothing to embed: do not load the encoder for an all-floor batch
        return []
    from haiku_kit.verify.similarity import cosine

    return cosine(topics, poems, **_similarity_settings)


@reward(floor=-0.5)
def similarity_reward(prompts, completions, **kwargs) -> list[float]:
    """cos(MiniLM(topic), MiniLM(poem)) - 0.5, as the reference's `reward_similarity`.

    Range [-1.5, 0.5]. Floor -0.5 (an empty or unusable poem counts as unrelated: cos 0).
    """
    analyses = _analyses(completions)
    topics = _topics(kwargs, len(completions))
    idx = [i for i, a in enumerate(analyses) if a is not None]
    cos = _cosines([topics[i] for i in idx], [analyses[i].poem for i in idx])
    out = [-0.5] * len(completions)
    for i, c in zip(idx, cos):
        out[i] = c - 0.5
    return out


@reward(floor=0.0)
def gated_similarity(prompts, completions, **kwargs) -> list[float]:
    """cos(topic, poem) - 0.5 when the poem is a haiku, else 0.0: the reference's 'sparse' part.

    Pays for topicality only once the form is right, so an off-form poem cannot score by
    merely being on topic. Floor 0.0.
    """
    analyses = _analyses(completions)
    topics = _topics(kwargs, len(completions))
    idx = [i for i, a in enumerate(analyses) if a is not None and a.check.is_haiku]
    cos = _cosines([topics[i] for i in idx], [analyses[i].poem for i in idx])
    out = [0.0] * len(completions)
    for i, c in zip(idx, cos):
        out[i] = c - 0.5
    return out


@reward(floor=-1.0)
def prompt_copy_penalty(prompts, completions, **kwargs) -> list[float]:
    """-(share of the poem's word trigrams found in the prompt), in [-1, 0]. Floor -1.0.

    Against the reference runs' reward hack of writing the instruction back as the poem.
    """
    topics = kwargs.get("topic") or [""] * len(completions)
    if isinstance(topics, str):
        topics = [topics] * len(completions)
    return [
        -1.0 if a is None else -copy_fraction(a.poem, prompt_text(p), str(t or ""))
        for a, p, t in zip(_analyses(completions), prompts, topics, strict=True)
    ]


@reward(floor=-1.0)
def format_penalty(prompts, completions, **kwargs) -> list[float]:
    """-0.5 per kind of wrapping extract_poem had to strip (preamble, sign-off, fence, bold,
    bullet, quotes, title; a <think> block is free), down to -1.0. Floor -1.0."""
    return [
        -1.0
        if a is None
        else -min(
            1.0,
            FORMAT_PENALTY_PER_KIND * len(set(a.extraction.stripped) - {"think"}),
        )
        for a in _analyses(completions)
    ]


@reward(floor=-1.0)
def length_penalty(prompts, completions, **kwargs) -> list[float]:
    """Penalty for poems longer than a haiku can be, in [-1, 0]. Floor -1.0.

    -min(1, max(excess words / 17, excess chars / 150)), where excess is the amount over
    17 words (a 5-7-5 poem has at most 17) or over 150 characters.
    """
    out = []
    for a in _analyses(completions):
        if a is None:
            out.append(-1.0)
            continue
        extra_words = max(0, len(words(a.poem)) - MAX_POEM_WORDS) / MAX_POEM_WORDS
        extra_chars = max(0, len(a.poem) - MAX_POEM_CHARS) / MAX_POEM_CHARS
        out.append(-min(1.0, max(extra_words, extra_chars)))
    return out


@reward(floor=-1.0)
def filler_penalty(prompts, completions, **kwargs) -> list[float]:
    """-1.0 when the poem reads as filler by the judge's rules (verify.judge.fluency_problems:
    a poem cut off on "the/of/and/then", a tacked-on ", then", a stutter, "the" four times...),
    else 0.0. Floor -1.0.

    The syllable rewards alone are gamed by padding one-syllable words with "the" / "then"
    until each line's word count is its syllable count; this takes that payoff back.
    """
    return [-1.0 if a is None or fluency_problems(a.poem) else 0.0 for a in _analyses(completions)]


@reward(floor=0.0)
def fluent_haiku_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the poem is a 5-7-5 haiku AND no judge rule calls it filler, else 0.0: the
    haiku reward gated on reading as English, so a filled-in count earns nothing. Floor 0.0."""
    return [0.0 if a is None else float(a.check.is_haiku and not fluency_problems(a.poem))
            for a in _analyses(completions)]


# -------------------- the reference's own rewards --------------------
# axeld5/gemma_haiku rewards.py, as its GRPO runs scored a completion: the whole completion,
# stripped (no poem extraction), its lines = the non-blank lines; the 5-7-5 check counts with
# pyphen (evaluate.metrics.pyphen_counts, the reference's count_syllables); similarity embeds the
# whole completion. The ref-dense / ref-sparse reward presets sum them with weight 1, which is the
# reference's compute_train_rewards / compute_train_rewards_sparse. The topic is the dataset's
# topic column (the reference parsed it out of the prompt, prompt.split(":")[1].strip(), which is
# the same text for its "...following topic: X" prompts unless X itself holds a colon).


def _ref_texts(completions: Sequence[Any]) -> list[str | None]:
    """Each completion's text, stripped; None (the reward's floor) where it is not text or is a
    runaway generation longer than MAX_COMPLETION_CHARS."""
    out: list[str | None] = []
    for completion in completions:
        try:
            text = completion_text(completion).strip()
        except TypeError:
            text = None
        out.append(text if text is not None and len(text) <= MAX_COMPLETION_CHARS else None)
    return out


@reward(floor=-1.0)
def ref_three_lines(prompts, completions, **kwargs) -> list[float]:
    """The reference's reward_three_lines: -1.0 unless the completion has exactly 3 non-blank
    lines, else 0.0. Floor -1.0."""
    return [0.0 if t is not None and len(pyphen_counts(t)) == len(PATTERN) else -1.0
            for t in _ref_texts(completions)]


@reward(floor=0.0)
def ref_haiku(prompts, completions, **kwargs) -> list[float]:
    """The reference's reward_haiku: 1.0 when pyphen counts the completion's 3 lines 5-7-5, else
    0.0 (evaluate.metrics.pyphen_is_haiku). Floor 0.0."""
    return [0.0 if t is None else float(pyphen_is_haiku(t)) for t in _ref_texts(completions)]


@reward(floor=-0.5)
def ref_similarity(prompts, completions, **kwargs) -> list[float]:
    """The reference's reward_similarity: cos(MiniLM(topic), MiniLM(completion)) - 0.5, on the
    whole completion. Floor -0.5."""
    texts = _ref_texts(completions)
    topics = _topics(kwargs, len(texts))
    idx = [i for i, t in enumerate(texts) if t is not None]
    out = [-0.5] * len(texts)
    for i, c in zip(idx, _cosines([topics[i] for i in idx], [texts[i] for i in idx])):
        out[i] = c - 0.5
    return out


@reward(floor=0.0)
def ref_gated_similarity(prompts, completions, **kwargs) -> list[float]:
    """The sparse part of the reference's compute_train_rewards_sparse: reward_similarity only
    where reward_three_lines + reward_haiku == 1 (a pyphen 5-7-5 haiku), else 0.0. Floor 0.0."""
    texts = _ref_texts(completions)
    topics = _topics(kwargs, len(texts))
    idx = [i for i, t in enumerate(texts) if t is not None and pyphen_is_haiku(t)]
    out = [0.0] * len(texts)
    for i, c in zip(idx, _cosines([topics[i] for i in idx], [texts[i] for i in idx])):
        out[i] = c - 0.5
    return out


REGISTRY: dict[str, Callable[..., list[float]]] = {
    f.__name__: f
    for f in (
        haiku_reward,
        line_count_penalty,
        syllable_reward,
        line_exact_reward,
        syllable_distance,
        similarity_reward,
        gated_similarity,
        prompt_copy_penalty,
        format_penalty,
        length_penalty,
        filler_penalty,
        fluent_haiku_reward,
        ref_three_lines,
        ref_haiku,
        ref_similarity,
        ref_gated_similarity,
    )
}


def get_reward(name: str) -> Callable[..., list[float]]:
    """The reward function registered under `name`."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown reward {name!r}; known rewards: {', '.join(sorted(REGISTRY))}"
        ) from None


# --------------------------------------------------------------------------- RewardSpec

@dataclass
class RewardSpec:
    """Which rewards GRPO uses and their weights (TRL sums weight * reward per completion)."""

    names: list[str]
    weights: list[float] = field(default_factory=list)  # empty: all 1.0

    def __post_init__(self) -> None:
        if isinstance(self.names, str) or not isinstance(self.names, Sequence):
            raise ConfigError(
                f"RewardSpec.names must be a list of reward names, got {self.names!r}"
            )
        self.names = list(self.names)
        if not self.names:
            raise ConfigError("RewardSpec.names is empty: name at least one reward")
        for name in self.names:
            get_reward(name)
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise ConfigError(f"RewardSpec.names lists {', '.join(dupes)} more than once")
        self.weights = [1.0] * len(self.names) if not self.weights else list(self.weights)
        if len(self.weights) != len(self.names):
            raise ConfigError(
                f"RewardSpec has {len(self.names)} names but {len(self.weights)} weights"
            )
        for name, w in zip(self.names, self.weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ConfigError(
                    f"RewardSpec weight of {name!r} must be a finite number, got {w!r}"
                )
        self.weights = [float(w) for w in self.weights]

    def reward_funcs(self) -> list[Callable[..., list[float]]]:
        """For GRPOTrainer(reward_funcs=...)."""
        return [get_reward(n) for n in self.names]

    def reward_weights(self) -> list[float]:
        """For GRPOConfig(reward_weights=...)."""
        return list(self.weights)

    def weight_of(self, name: str) -> float:
        return self.weights[self.names.index(name)]

    @classmethod
    def preset(cls, name: str) -> RewardSpec:
        if name not in REWARD_PRESETS:
            raise ConfigError(
                f"unknown reward preset {name!r}; known presets: {', '.join(sorted(REWARD_PRESETS))}"
            )
        table = REWARD_PRESETS[name]
        return cls(list(table), list(table.values()))

    @classmethod
    def from_dict(cls, data: Any) -> RewardSpec:
        """From a preset name, {"preset": name}, {"names": [...], "weights": [...]} or
        a {name: weight} mapping."""
        if isinstance(data, RewardSpec):
            return data
        if isinstance(data, str):
            return cls.preset(data)
        if not isinstance(data, dict):
            raise ConfigError(f"rewards must be a preset name or a mapping, got {data!r}")
        if "preset" in data:
            return cls.preset(data["preset"])
        if "names" in data:
            unknown = sorted(set(data) - {"names", "weights"})
            if unknown:
                raise ConfigError(f"rewards: unknown keys {', '.join(unknown)} (names, weights)")
            return cls(data["names"], data.get("weights") or [])
        return cls(list(data), list(data.values()))

    def to_dict(self) -> dict[str, list]:
        return {"names": list(self.names), "weights": list(self.weights)}
