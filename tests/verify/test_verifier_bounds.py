"""The verifier's caps: `check`, `extract_poem` and the estimator in bounded time and memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hypothesis import example, given, settings
from hypothesis import strategies as st

from haiku_kit.verify.estimator import MAX_ESTIMATE_LETTERS, estimate
from haiku_kit.verify.haiku import (
    LINE_COUNT_PENALTY,
    MAX_LINE_CHARS,
    MAX_TEXT_CHARS,
    check,
    extract_poem,
)
from haiku_kit.verify.syllables import analyze_line

POEM = "Golden leaves descend,\nCar turns, a sudden, swift shift,\nAutumn's quiet grace."
MB = 1_000_000


@settings(max_examples=25, deadline=None)
@given(
    st.text(alphabet=st.characters(), min_size=1, max_size=6),
    st.integers(1, MB),
    st.sampled_from(["alone", "line 2", "poem + word", "word + poem"]),
)
@example(chunk="ab", size=MB, where="line 2")
@example(chunk="ab", size=MAX_TEXT_CHARS - 100, where="line 2")
def test_megabyte_words_never_raise_and_are_never_haiku(chunk, size, where):
    word = (chunk * (size // len(chunk) + 1))[:size]
    text = {
        "alone": word,
        "line 2": f"autumn moonlight\n{word}\nsoft rain on the roof",
        "poem + word": f"{POEM} {word}",
        "word + poem": f"{word}\n{POEM}",
    }[where]
    result = check(text)
    assert result.distance >= 0
    assert len(result.lines) == len(result.counts)
    extraction = extract_poem(text)
    assert len(extraction.poem) <= MAX_TEXT_CHARS
    if len(text) > MAX_TEXT_CHARS:
        assert not result.is_haiku and "characters" in result.reason
        assert extraction.stripped == ("oversize",)


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), st.integers(1, MB))
@example(chunk="ab", size=MB)
@example(chunk="b", size=MB)
def test_estimate_of_any_length_word_is_at_least_one(chunk, size):
    word = (chunk * (size // len(chunk) + 1))[:size]
    n = estimate(word)
    assert n >= 1
    if len(word) > MAX_ESTIMATE_LETTERS:  # vowel groups: at most one per two letters, rounded up
        assert n <= (len(word) + 1) // 2


def test_long_words_count_their_vowel_groups():
    word = "strength" * 100  # 800 letters, 100 vowel groups
    assert len(word) > MAX_ESTIMATE_LETTERS
    assert estimate(word) == 100
    assert estimate("b" * 1000) == 1  # no vowel: at least one
    # Below the cap the learned estimator is used, unchanged.
    assert estimate("pneumonoultramicroscopicsilicovolcanoconiosis") in range(17, 22)


def test_a_line_over_the_cap_gets_no_count_and_says_so():
    long_line = "rain " * (MAX_LINE_CHARS // 5 + 1)
    assert analyze_line(long_line).over_cap and analyze_line(long_line).totals == frozenset()
    result = check(f"autumn moonlight\n{long_line}\nsoft rain on the roof")
    assert not result.is_haiku
    assert f"line 2 has {len(long_line.strip())} characters, over the {MAX_LINE_CHARS}" in (
        result.reason
    )
    assert result.line_errors[1] == -7  # as far off as an empty line


def test_a_text_over_the_cap_is_as_far_off_as_an_empty_one():
    text = POEM + " " * MAX_TEXT_CHARS
    result = check(text)
    assert not result.is_haiku and result.lines == ()
    assert result.distance == check("").distance == 3 * LINE_COUNT_PENALTY
    assert result.reason == f"text has {len(text)} characters, over the {MAX_TEXT_CHARS} checked"
    assert check(text.strip()).is_haiku  # the cap is on the raw text


def test_caps_leave_real_poems_alone():
    bold = "**Autumn Leaves**\n\n" + "\n".join(f"*{line}*" for line in POEM.splitlines())
    long_answer = f"Here is a haiku:\n\n{POEM}\n\n" + "I hope you like it. " * 500
    for text in (POEM, bold, long_answer, "<think>" + "count " * 2000 + "</think>\n" + POEM):
        assert len(text) < MAX_TEXT_CHARS
        assert check(extract_poem(text).poem).is_haiku, text[:80]


def test_long_whitespace_run_splits_like_before():
    assert check("a" + " " * 15_000 + "b").lines == ("a" + " " * 15_000 + "b",)
    assert check("one / two  " + " " * 10_000 + "/ three").lines == ("one", "two", "three")


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    from haiku_kit.verify.haiku import check, extract_poem
    from haiku_kit.verify.syllables import analyze_line, estimate

    check("warm up the dictionary and the estimator")
    estimate("blorptastic")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    word = "a" + "b" * 1_000_000
    results = [
        check(word).is_haiku,
        check("autumn moonlight\\n" + word + "\\nsoft rain on the roof").is_haiku,
        check("x" + "ae" * 9_990).is_haiku,  # one word just under the text cap
        bool(extract_poem("*a " * 300_000 + word).poem),
        estimate(word) > 0,
        analyze_line(word).over_cap,
    ]
    peak = tracemalloc.get_traced_memory()[1]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"peak_mb": peak / 1e6, "rss_growth_mb": grown / 1024, "results": results}))
    """
)


def test_one_megabyte_word_stays_under_200_mb():
    """Before the caps, check() on a 1 MB word peaked at about 2 GB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["results"] == [False, False, False, False, True, True]
    assert probe["peak_mb"] < 200, probe
    assert probe["rss_growth_mb"] < 200, probe
