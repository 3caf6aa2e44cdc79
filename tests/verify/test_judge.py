"""The haiku judge (haiku_kit/verify/judge.py): each fluency rule, each verdict part, and the judge on
the real validation sets (benchmarks/judge_validation.py builds them) with the real MiniLM."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

import haiku_kit.verify.judge as J
from haiku_kit.verify.judge import Judge, fluency_problems, topic_copy_fraction

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "judge_validation", REPO / "benchmarks" / "judge_validation.py")
jv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jv)

HUMAN = "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake"


def rule(name: str, poem: str) -> list[str]:
    return fluency_problems(poem, rules={name})


# --------------------------------------------------------------------------- the rules


def test_human_poem_has_no_problems():
    assert fluency_problems(HUMAN) == []
    assert fluency_problems("I wasn't read for\nthat to be Mac Miller's last\nalbum Rest In Peace") == []


@pytest.mark.parametrize("poem, bad", [
    ("the lot of the park\nthe moon is high in the air\non the hill, then the", "'the'"),
    ("a cold day\nthe wind\nhe walks to his", "'his'"),
    ("a cold day\nthe wind\nthe boy runs and", "'and'"),
    ("a cold day\nthe wind\nthen he goes, then", "'then'"),
    ("a cold day\nthe wind\nthe old man thinks it's", "'it's', a contraction"),
    ("a cold day\nthe wind\nthe young man cheers, here\u2019s.", "'here\u2019s', a contraction"),
    ("a cold day\nthe wind\nI would have died I'm", "'I'm', a contraction"),
])
def test_poem_end_fails_on_a_word_that_needs_more(poem, bad):
    problems = rule("poem_end", poem)
    assert problems and bad in problems[0]


@pytest.mark.parametrize("last", ["the lights stay on", "we all come in", "cars passing by",
                                  "rust blooms on the rake", "the whole house sleeps", "we don't",
                                  "that's who we are", "the ocean's blue"])
def test_poem_end_allows_particles_and_nouns(last):
    assert rule("poem_end", f"a\nb\n{last}") == []
    assert rule("no_noun", f"a\nb\n{last}") == []


@pytest.mark.parametrize("poem, bad", [
    ("on the firefly's\nthe boy's pink hand shakes fast\nthe light from the fire",
     "line 1 ends on the possessive 'firefly's', owning nothing"),
    ("longing for summer\nconcert at the library\na record player\u2019s.",
     "line 3 ends on the possessive 'player\u2019s', owning nothing"),
    ("fishing villages\nthe sun sets in the early\nwe pick clams and fish",
     "line 2 ends on 'the early', an adjective with no noun"),
    ("rose petals on hot\nher palms in a white silk roll\nher thumb in the sun",
     "line 1 ends on 'on hot', an adjective with no noun"),
    ("a cold day\nthe wind\nthe kids eat the whole", "line 3 ends on 'the whole', an adjective with no noun"),
    ("the speaker shakes out\nthe ghost of her lost life, her\na thousand dollars'",
     "line 3 ends on the possessive 'dollars'', owning nothing"),
])
def test_no_noun_catches_a_line_cut_before_its_noun(poem, bad):
    assert rule("no_noun", poem) == [bad]


@pytest.mark.parametrize("line", [
    # contractions, adjectives that are nouns too, idioms: the kit's human haiku end so
    "and then it's", "let's", "waiting in the cold", "boats bobbing in blue", "then walks on its own",
    "drinking is just the same", "paid in full", "days of old", "not for long", "the old house",
    "a nest for her young", "the old phone says, 'here it is'",
])
def test_no_noun_leaves_english_line_ends(line):
    assert J.line_end_problem(line) is None


def test_end_punctuation():
    assert rule("end_punctuation", "a cat\nsits here\nand then it goes,")
    assert rule("end_punctuation", "a cat\nsits here\nand then it goes -")
    assert rule("end_punctuation", "a cat\nsits here\nand then it goes.") == []


def test_tacked_on_word():
    assert rule("tacked_on", "a dog\nruns\ndown the road, too")
    assert rule("tacked_on", "a dog\nruns\ndown the road, then")
    assert rule("tacked_on", "a dog\nruns\nme too") == []


@pytest.mark.parametrize("last", ["then he goes, then", "the kids eat the whole", "and then it goes,",
                                  "down the road, too", "the moon is like", "a record player's"])
def test_ends_unfinished_is_the_end_rules_on_a_last_line(last):
    from haiku_kit.verify.judge import ends_unfinished

    assert ends_unfinished(last)
    assert fluency_problems(f"a cat\nsits here\n{last}")
    for fine in ("rust blooms on the rake", "the lights stay on", "", "it goes."):
        assert not ends_unfinished(fine), fine


def test_dangling_determiner_catches_filler_not_enjambment():
    assert rule("dangling_determiner", "a walk in the\npark at dusk\nbirds sing")
    assert rule("dangling_determiner", "a walk\nthe dogs run and the\ngrass is wet")
    # a determiner after a content word or a verb's preposition is ordinary enjambment
    assert rule("dangling_determiner", "the sound of\nwater\nin the dark") == []
    assert rule("dangling_determiner", "Rose returns to the\nhill\nfor work") == []
    # the last line is the poem_end rule's business
    assert rule("dangling_determiner", "a\nb\nin the") == []


def test_impossible_pair():
    assert rule("impossible_pair", "the of rain\nfalls\nslowly")
    assert rule("impossible_pair", "my and cat\nsleeps\nslowly")
    assert rule("impossible_pair", "I hold her and\nwe\nsleep") == []  # "her" the pronoun
    assert rule("impossible_pair", HUMAN) == []


def test_garbled_words():
    assert rule("garbled", "an ace on the green serves\nthe next kid's ballJ pit\nc") == [
        "garbled word 'ballJ'"]
    assert rule("garbled", "a walk proceedingThe rain\nb\nc")
    assert rule("garbled", "a rocking chair\npaws that feel soft9\nc") == ["garbled word 'soft9'"]
    assert rule("garbled", "roses in the wind\nthe wind's roar, light) pit\nc") == [
        "an unmatched ')'"]
    assert rule("garbled", "a (small) bird\nb\nc") == []
    assert rule("garbled", 'the market\nvendors draw tarps"\x17\nc') == [
        "a control character (U+0017)"]
    assert rule("garbled", "a tab\there\nb\nc") == []
    assert rule("garbled", "a summer night\nb\nhis fingers on child'sth\u00e9") == [
        "garbled word 'child'sth\u00e9'"]
    assert rule("garbled", 'a sunny grass court\nb\nthe young man cheers" catch') == [
        "an unmatched '\"'"]
    assert rule("garbled", "a \u201cquote\nb\nc") == ["an unmatched '\u201c'"]
    # an apostrophe closing a word must own ("dogs'"), drop a g ("fightin'") or quote
    assert rule("garbled", "we talk to each other in\nb\nthe bully sees one'") == [
        "a stray apostrophe in 'one''"]
    assert rule("garbled", "a\nTrump's face still red' watch\nc") == ["a stray apostrophe in 'red''"]
    for fine in ("the dogs' bowls\nfightin' words\no' the sea", "rock 'n' roll\nb\nc",
                 "old man says, 'you know it now'\nb\nc"):
        assert rule("garbled", fine) == [], fine
    for fine in ('I say "hi" to you\nb\nc', "it's a caf\u00e9 night\nb\nc", "the dog's bowl\nb\nc"):
        assert rule("garbled", fine) == [], fine
    for human in ("watching YouTube late\nb\nc", "McDonalds at night\nb\nc", HUMAN):
        assert rule("garbled", human) == []


def test_stutter():
    assert "'still' twice in a row" in rule("stutter", "the chapel stands still, still\nb\nc")
    assert rule("stutter", "on the hill the\nthe grass\nis green")  # across a line break
    assert rule("stutter", HUMAN) == []


def test_repeats():
    assert "'cold' 3 times" in rule("repeats", "cold wind\ncold snow on the cold\nroad")
    assert "'the' 4 times" in rule("repeats", "the cat\nthe dog and the\nbird in the tree")
    assert "'then' 2 times" in rule("repeats", "then a cat\nthen\nsleeps")
    assert rule("repeats", "cold wind\ncold snow\nroad") == []
    assert rule("repeats", "the cat\nthe dog and the\nbird in a tree") == []
    # with "the" three times, not even one content word may come twice
    assert "'cat' twice in a poem with 'the' 3 times" in rule(
        "repeats", "the cat\nthe dog and the\ncat in a tree")
    assert rule("repeats", "the cat\nthe dog and a\ncat in a tree") == []


def test_rules_subset_and_empty():
    assert fluency_problems("") == ["no words"]
    assert fluency_problems("the cat\nsat\non the, the", rules=set()) == []
    assert set(J.RULES) == {"poem_end", "no_noun", "end_punctuation", "tacked_on", "dangling_determiner",
                            "impossible_pair", "stutter", "garbled", "repeats"}


def test_topic_copy_fraction():
    topic = "A surgeon scrubs her hands before a long operation"
    assert topic_copy_fraction("a surgeon scrubs\nher hands before a long\noperation", topic) == 1
    assert topic_copy_fraction(HUMAN, "autumn rain") == 0


# --------------------------------------------------------------------------- the verdict


@pytest.fixture
def fake_cosine(monkeypatch):
    """cosine = 0.9 when the poem shares a word with the topic, else 0.1 (no MiniLM)."""
    def fake(topics, poems, model=None):
        return [0.9 if set(t.lower().split()) & set(p.lower().split()) else 0.1
                for t, p in zip(topics, poems)]

    monkeypatch.setattr(J, "cosine", fake)


def test_verdict_good(fake_cosine):
    [v] = Judge().judge(["<think>five seven five</think>\n" + HUMAN], ["autumn rain"])
    assert (v.valid, v.fluent, v.on_topic, v.original, v.good) == (True,) * 5
    assert v.poem == HUMAN and v.reasons == () and v.order_gain is None


def test_verdict_parts_fail_on_their_own(fake_cosine):
    judge = Judge()
    [invalid] = judge.judge(["autumn rain taps\non the roof\nrust blooms"], ["autumn rain"])
    assert not invalid.valid and invalid.fluent and not invalid.good
    [filler] = judge.judge(["the lot of the park\nthe rain is high in the air\non the hill, then the"],
                           ["rain"])
    assert filler.valid and not filler.fluent and filler.on_topic and not filler.good
    assert any("ends on 'the'" in r for r in filler.reasons)
    [off] = judge.judge([HUMAN], ["a birthday party"])
    assert off.valid and off.fluent and not off.on_topic and any("off topic" in r for r in off.reasons)
    copy = "generate a haiku\nabout the following topic\nautumn rain the rain"
    [copied] = judge.judge([copy], ["autumn rain"])
    assert not copied.original and any("instruction" in r for r in copied.reasons)
    topic = "a surgeon scrubs her hands before a long operation"
    [relined] = judge.judge(["a surgeon scrubs her\nhands before a long surgery\nscrubs her hands before"],
                            [topic])
    assert not relined.original and any("copies the topic" in r for r in relined.reasons)


def test_verdict_word_order_threshold(fake_cosine, monkeypatch):
    monkeypatch.setattr(J, "word_order_gain", lambda model, tok, poems: [0.1] * len(poems))
    [v] = Judge().judge([HUMAN], ["autumn rain"], model=object(), tokenizer=object())
    assert v.order_gain == 0.1 and not v.fluent and not v.good
    assert any("word order" in r for r in v.reasons)
    monkeypatch.setattr(J, "word_order_gain", lambda model, tok, poems: [2.0] * len(poems))
    [v] = Judge().judge([HUMAN], ["autumn rain"], model=object(), tokenizer=object())
    assert v.good and v.order_gain == 2.0
    monkeypatch.setattr(J, "word_order_gain", lambda model, tok, poems: [float("nan")] * len(poems))
    [v] = Judge().judge([HUMAN], ["autumn rain"], model=object(), tokenizer=object())
    assert v.good  # no order to judge


def test_the_lm_reads_only_poems_that_pass_every_other_part(fake_cosine, monkeypatch):
    seen = []

    def gain(model, tok, poems):
        seen.extend(poems)
        return [0.1] * len(poems)

    monkeypatch.setattr(J, "word_order_gain", gain)
    filler = "the lot of the park\nthe rain is high in the air\non the hill, then the"
    verdicts = Judge().judge([HUMAN, filler], ["autumn rain", "rain"], model=object(), tokenizer=object())
    assert seen == [HUMAN]  # the filler already fails: no LM pass for it
    assert not verdicts[0].good and verdicts[1].order_gain is None


def test_given_cosines_replace_the_encoder(monkeypatch):
    monkeypatch.setattr(J, "cosine", lambda *a, **k: pytest.fail("the encoder ran"))
    [v, empty] = Judge().judge([HUMAN, ""], ["autumn rain", "x"], cosines=[0.3, 0.9])
    assert v.cosine == 0.3 and not v.on_topic and empty.cosine == 0.0
    with pytest.raises(ValueError, match="cosines"):
        Judge().judge([HUMAN], ["autumn rain"], cosines=[0.3, 0.4])


def test_shuffle_lines_changes_every_line_it_can():
    rng = random.Random(0)
    text = "autumn rain taps slow\nalone\nrust blooms on the rake"
    for _ in range(20):
        out = J._shuffle_lines(text, rng).split("\n")
        assert out[0] != "autumn rain taps slow" and sorted(out[0].split()) == sorted(
            ["autumn", "rain", "taps", "slow"])
        assert out[1] == "alone" and out[2] != "rust blooms on the rake"
    assert J._shuffle_lines("one\nword\nlines", rng) is None


def test_derived_sets_keep_syllables():
    from haiku_kit.verify.haiku import check

    human = jv.kit_human("report")[:60]
    for topic, poem in jv.shuffled(human):
        assert check(poem).is_haiku
    salad = jv.word_salad(human)
    assert len(salad) > 50 and all(check(p).is_haiku for _, p in salad)
    copies = jv.instruction_copies([t for t, _ in human])
    assert copies and all(check(p).is_haiku for _, p in copies)
    assert all(a != b for (a, _), (b, _) in zip(jv.wrong_topic(human), human))


# --------------------------------------------------------------------------- validation


def _pass_rate(verdicts) -> float:
    valid = [v for v in verdicts if v.valid]
    return sum(v.good for v in valid) / len(valid)


def _sample(pairs, n, seed=0):
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def _run(pairs, **kw):
    return Judge().judge([p for _, p in pairs], [t for t, _ in pairs], **kw)


@pytest.mark.slow
def test_validation_sets_rules_and_minilm():
    """The table's thresholds on the shipped sets, rules + real MiniLM (no 270M model)."""
    human = _sample(jv.kit_human("report"), 400)
    assert _pass_rate(_run(human)) >= 0.85
    for name, pairs in [("distilled", jv.distilled()), ("filler", jv.filler()),
                        ("wrong topic", jv.wrong_topic(human)),
                        ("instruction copies", jv.instruction_copies([t for t, _ in human]))]:
        assert _pass_rate(_run(pairs)) <= 0.10, name


@pytest.mark.slow
def test_word_order_catches_shuffled_words_and_salad(embedded):
    """Rules see no word order; with word_order_gain (embedded 270M) shuffled and salad poems
    fail while human ones pass. Small seeded samples keep this near 30 s on one core
    (benchmarks/judge_validation.py measures 100 per set)."""
    model, tokenizer = embedded
    human = _sample(jv.kit_human("report"), 200, seed=1)
    assert _pass_rate(_run(human[:20], model=model, tokenizer=tokenizer)) >= 0.85
    for name, pairs in [("shuffled", jv.shuffled(human)[:16]), ("salad", jv.word_salad(human)[:12])]:
        assert _pass_rate(_run(pairs, model=model, tokenizer=tokenizer)) <= 0.10, name


@pytest.mark.slow
def test_raw_likelihood_trap_and_order_gain(embedded):
    """The trap the judge avoids: raw mean log-likelihood ranks filler ABOVE human poems;
    the word-order gain does not rank a shuffled poem above its original."""
    model, tokenizer = embedded
    human = [p for _, p in jv.kit_human("report")[:8]]
    filler = [p for _, p in jv.filler()[:8]]
    lp = J.lm_logprob(model, tokenizer, [J._lm_text(p) for p in human + filler])
    per_word = [x / len(J._lm_text(p).split()) for x, p in zip(lp, human + filler)]
    assert sum(per_word[8:]) / 8 > sum(per_word[:8]) / 8
    gains = J.word_order_gain(model, tokenizer, human + [p for _, p in jv.shuffled(
        [("", p) for p in human])])
    assert min(gains[:8]) > max(gains[8:]) - 0.5 and sum(gains[:8]) > sum(gains[8:]) + 8


@pytest.mark.slow
def test_validation_reference_dev(shared_dir):
    """Reference answers (eval_data.json rows 0-127, the development set) pass, and fail under
    another row's topic."""
    dev = jv.reference_dev()
    assert _pass_rate(_run(dev)) >= 0.85
    assert _pass_rate(_run(jv.wrong_topic(dev))) <= 0.10
