"""haiku_kit.verify.syllables: dictionary path, estimator, and real completion text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haiku_kit.verify.syllables import (
    analyze_line,
    count,
    counts,
    estimate,
    line_counts,
    number_words,
)

SHARED = Path(__file__).resolve().parents[3] / "shared"
GOLD = SHARED / "data" / "syllable_gold" / "words_syllable.json"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("fire", {1, 2}), ("every", {2, 3}), ("haiku", {2}), ("cat", {1}), ("beautiful", {3})],
)
def test_counts_all_pronunciations(word, expected):
    assert counts(word) == frozenset(expected)


def test_count_is_first_pronunciation():
    assert count("cat") == 1
    assert count("fire") in counts("fire")
    assert count("every") in {2, 3}


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("turns,", 1),
        ("Turns.", 1),
        ('"Autumn', 2),
        ("(quiet)", 2),
        ("grace!", 1),
        ("don't", 1),
        ("it's", 1),
        ("'tis", 1),
        ("'twas", 1),
        ("can't", 1),
        ("we'll", 1),
        ("don\u2019t", 1),
        ("\u2018tis", 1),
        ("Autumn\u2019s", 2),
        ("horse's", 2),
        ("mustn't", 2),
    ],
)
def test_case_punctuation_apostrophes(token, expected):
    assert expected in counts(token)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("well-known", 2),
        ("sun-kissed", 2),
        ("and/or", 2),
        ("river/sea", 3),
        ("snow\u2014silence", 3),
    ],
)
def test_hyphen_slash_dash_joined(text, expected):
    assert expected in line_counts(text)


@pytest.mark.parametrize(
    ("number", "words", "syllables"),
    [
        ("7", ["seven"], 2),
        ("1999", ["nineteen", "ninety", "nine"], 5),
        ("2024", ["twenty", "twenty", "four"], 5),
        ("2000", ["two", "thousand"], 3),
        ("3.5", ["three", "point", "five"], 3),
        ("1,000", ["one", "thousand"], 3),
        ("1st", ["first"], 1),
        ("2nd", ["second"], 2),
        ("21st", ["twenty", "first"], 3),
        ("100th", ["one", "hundredth"], 3),
        ("1990s", ["nineteen", "nineties"], 4),
        ("12", ["twelve"], 1),
    ],
)
def test_numbers_and_ordinals(number, words, syllables):
    assert number_words(number) == words
    assert syllables in counts(number)
    assert analyze_line(number).words[0].source == "number"


@pytest.mark.parametrize(
    ("abbr", "expected"),
    [("Dr.", 2), ("St.", 1), ("Mr", 2), ("Mrs.", 2), ("etc.", 4), ("vs.", 2), ("Jr.", 2)],
)
def test_abbreviations(abbr, expected):
    assert expected in counts(abbr)


@pytest.mark.parametrize(
    ("acronym", "expected"),
    [
        ("NASA", 2),
        ("FBI", 3),
        ("NATO", 2),
        ("HTML", 4),
        ("XKCD", 4),
        ("U.S.A.", 3),
        ("WWF", 7),
        ("ZORP", 1),
    ],
)
def test_acronyms_by_pronounceability(acronym, expected):
    assert counts(acronym) == frozenset({expected})


def test_shouted_line_is_words_not_acronyms():
    assert line_counts("THE QUIET POND") == frozenset({4})


def test_emoji_and_symbols_count_zero_and_are_reported():
    line = analyze_line("falling leaves \U0001f342 \u2605")
    assert line.totals == frozenset({3})
    assert line.symbols == ("\U0001f342", "\u2605")
    assert counts("\U0001f338") == frozenset({0})
    assert analyze_line("rain & snow").totals == frozenset({3})  # & is read "and"


def test_punctuation_is_silent_and_not_reported():
    line = analyze_line("...wait -- (what?!) \u2026")
    assert line.symbols == ()
    assert line.totals == frozenset({2})


def test_line_totals_combine_pronunciations():
    assert line_counts("every fire") == frozenset({3, 4, 5})
    assert line_counts("") == frozenset({0})
    words = analyze_line("the zorblaxian moon").words
    assert [w.source for w in words] == ["dict", "estimate", "dict"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("cat", 1),
        ("make", 1),
        ("table", 2),
        ("jumped", 1),
        ("wanted", 2),
        ("boxes", 2),
        ("happy", 2),
        ("create", 2),
        ("poetry", 3),
        ("beautiful", 3),
        ("quietly", 3),
        ("hopeless", 2),
        ("unbelievable", 5),
        ("lioness", 3),
    ],
)
def test_estimator_common_words(word, expected):
    assert estimate(word) == expected


def test_estimator_never_uses_the_dictionary(monkeypatch):
    import haiku_kit.verify.estimator as syl
    import haiku_kit.verify.syllables

    def boom():
        raise AssertionError("dictionary consulted")

    monkeypatch.setattr(haiku_kit.verify.syllables, "_dictionary", boom)
    syl._estimate_memo.cache_clear()
    assert syl.estimate("blorptastic") >= 2
    assert syl.estimate("") == 0
    syl._estimate_memo.cache_clear()


def test_estimator_cnns_are_shipped_and_sane():
    import haiku_kit.verify.estimator as syl

    nets, share = syl._cnns()
    assert len(nets) >= 1 and 0 < share < 1
    for net in nets:
        assert abs(syl._cnn_score(net, "cat") - 1) < 0.5
        assert abs(syl._cnn_score(net, "unbelievable") - 5) < 0.5


def test_dictionary_path_on_gold_words():
    if not GOLD.exists():
        pytest.skip(f"gold words list absent: {GOLD}")
    gold = json.loads(GOLD.read_text())
    hits = sum(n in counts(w) for w, n in gold.items())
    assert hits / len(gold) >= 0.99


def test_estimator_beats_baseline_on_gold_words():
    if not GOLD.exists():
        pytest.skip(f"gold words list absent: {GOLD}")
    gold = json.loads(GOLD.read_text())
    hits = sum(estimate(w) == n for w, n in gold.items())
    assert hits / len(gold) >= 0.79  # measured 82.4%; pyphen 51.8%, vowel groups 38%
