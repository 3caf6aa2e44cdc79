"""The reference protocol (evaluate/protocol.py): its settings are the reference's, its answer cut
and pyphen judge reproduce the reference's eval code (axeld5/gemma_haiku full_eval.py @14b39b1,
rewards.py) verdict for verdict, and its table sits beside the published one."""

from __future__ import annotations

import json

import pyphen
import pytest

from haiku_kit.config import EvalSettings, load_preset
from haiku_kit.evaluate import metrics
from haiku_kit.evaluate import protocol as P
from haiku_kit.evaluate import scoring as ev
from haiku_kit.generate.write import Generations

# How the reference's eval decoded a generation: the chat prompt with its special tokens, then the
# new tokens (tokenizer.batch_decode(outputs)[0], full_eval.py); Gemma 3's chat template.
RENDERED_PROMPT = ("<bos><start_of_turn>user\nGenerate a haiku about the following topic: {topic}"
                   "<end_of_turn>\n<start_of_turn>model\n")


# --- the reference's own eval code, written out from its files (never imported) ----------------
def reference_cut(decoded: str) -> str:
    """full_eval.py @14b39b1 L119: the answer the published table judged."""
    return decoded.split("model\n")[1].split("\n<end_of_turn>")[0].strip()


def reference_is_haiku(text: str) -> bool:
    """rewards.py L6-26: count_syllables + is_haiku."""
    dic = pyphen.Pyphen(lang="en")

    def count_syllables(line):
        return sum(dic.inserted(word).count("-") + 1 for word in line.strip().split())

    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    return len(lines) == 3 and [count_syllables(line) for line in lines] == [5, 7, 5]
# -----------------------------------------------------------------------------------------------


def test_the_protocols_settings_are_the_references():
    plan = P.eval_plan(EvalSettings(k=8, max_new_tokens=128, temperature=0.7, n_prompts=200),
                       "reference")
    assert plan == P.EvalPlan("reference", k=1, max_new_tokens=50, temperature=1.0, top_p=0.95,
                              top_k=64, n_prompts=0)  # full_eval.py: generate(max_new_tokens=50, ...)
    assert P.REFERENCE.end_marker == "\n<end_of_turn>" and P.REFERENCE.pyphen_lang == metrics.PYPHEN_LANG
    kit = P.eval_plan(EvalSettings(k=8, max_new_tokens=128, temperature=0.7, n_prompts=200))
    assert (kit.protocol, kit.k, kit.max_new_tokens, kit.temperature, kit.n_prompts) == ("kit", 8, 128, 0.7, 200)
    with pytest.raises(ValueError, match="published"):
        P.eval_plan(EvalSettings(), "published")


GENERATIONS = [
    "frogs sing in the pond\nthe moon floats on the water\nnight is calm and cool<end_of_turn>",
    "frogs sing in the pond\nthe moon floats on the water\nnight is calm and cool\n<end_of_turn>",
    "Sure! Here is a haiku:\n\nfrogs sing in the pond\nthe moon floats",  # cut at 50 tokens
    "a model\nof the pond at night<end_of_turn>",
    "\n\nred leaves drift down slow\nthe autumn wind carries them\nbare branches remain<end_of_turn>",
    "",
]


@pytest.mark.parametrize("generated", GENERATIONS)
def test_the_answer_is_cut_as_the_reference_cut_it(generated):
    decoded = RENDERED_PROMPT.format(topic="frogs") + generated
    assert P.reference_answer(generated) == reference_cut(decoded)
    assert metrics.pyphen_is_haiku(P.reference_answer(generated)) == reference_is_haiku(reference_cut(decoded))


def test_the_glued_end_token_stays_on_the_last_word_as_in_the_published_table():
    # "flower" is one syllable to pyphen, "flower<end_of_turn>" two: the table's cut changes counts
    assert metrics.pyphen_counts("flower") == [1] and metrics.pyphen_counts("flower<end_of_turn>") == [2]
    assert P.reference_answer("a\nb\nflower<end_of_turn>").endswith("flower<end_of_turn>")
    assert P.reference_answer("a\nb\nflower\n<end_of_turn>") == "a\nb\nflower"


def test_the_topic_is_parsed_as_the_reference_parsed_it():
    assert P.reference_topic("Generate a haiku about the following topic: frogs\n") == "frogs"
    assert P.reference_topic("Generate a haiku about the following topic: Re: frogs") == "Re"
    assert P.reference_topic("frogs") == "frogs"


def test_the_judge_reproduces_the_references_verdicts_on_its_human_answers(shared_dir):
    """The 592 human answers of the reference's eval file, as a model would emit them (end token
    glued, after a newline, or cut off), judged by the kit and by the reference's own code."""
    rows = json.loads((shared_dir / "data/gemma_haiku/eval_data.json").read_text())
    answers = [row["conversations"][1]["content"] for row in rows]
    assert len(answers) == 592
    verdicts = {}
    for ending in ("<end_of_turn>", "\n<end_of_turn>", ""):
        kit = [metrics.pyphen_is_haiku(P.reference_answer(a + ending)) for a in answers]
        ref = [reference_is_haiku(reference_cut(RENDERED_PROMPT.format(topic="x") + a + ending))
               for a in answers]
        assert kit == ref, ending
        verdicts[ending] = sum(kit)
    # all pass (the reference filtered its data with pyphen 5-7-5) unless the end token is glued
    # to the last word: then 87 of 592 fail the published table's cut
    assert verdicts == {"": 592, "\n<end_of_turn>": 592, "<end_of_turn>": 505}


class FakeScorer:
    def __init__(self):
        self.calls = []

    def cosine(self, topics, poems):
        self.calls.append((list(topics), list(poems)))
        return [0.25 if "<end_of_turn>" in p else 0.75 if t == "frogs" else 0.5
                for t, p in zip(topics, poems)]


POEM = "frogs sing in the pond\nthe moon floats on the water\nnight is calm and cool"


def _prompt(topic):
    return [{"role": "user", "content": f"Generate a haiku about the following topic: {topic}\n"}]


def test_evaluate_adds_the_reference_metrics_under_the_reference_protocol():
    gens = Generations(texts=[[POEM], [POEM], ["no haiku here"]],
                       hit_limit=[[False], [False], [True]], num_tokens=[[20], [20], [50]],
                       max_new_tokens=50,
                       raw=[[POEM + "\n<end_of_turn>"], [POEM + "<end_of_turn>"], ["no haiku here"]])
    scorer = FakeScorer()
    topics = ["frogs", "frogs", "pond: at night"]
    result = ev.evaluate(gens, topics, [_prompt(t) for t in topics], scorer=scorer, reference=True)
    r = result.records
    assert [x["reference_haiku"] for x in r] == [True, True, False]  # "cool<end_of_turn>": 1 syllable
    assert r[1]["reference_answer"] == POEM + "<end_of_turn>" and r[2]["reference_topic"] == "pond"
    # only the pairs that differ from (topic, completion) are embedded again
    assert scorer.calls[1] == (["frogs", "pond"], [POEM + "<end_of_turn>", "no haiku here"])
    assert [x["reference_similarity"] for x in r] == pytest.approx([0.25, -0.25, 0.0])
    m = result.metrics
    assert m["reference_haiku"] == pytest.approx(2 / 3)
    assert m["reference_total"] == pytest.approx(m["reference_haiku"] + m["reference_similarity"])
    kit = ev.evaluate(gens, topics, [_prompt(t) for t in topics], scorer=FakeScorer())
    assert "reference_haiku" not in kit.metrics and "reference_answer" not in kit.records[0]


def test_a_saved_reference_result_loads_back(tmp_path):
    result = ev.evaluate([POEM], ["frogs"], [_prompt("frogs")], similarity=False, reference=True,
                         meta={"protocol": "reference"})
    result.save(tmp_path)
    loaded = ev.EvalResult.load(tmp_path)
    assert loaded.metrics["reference_haiku"] == 1.0 and loaded.meta["protocol"] == "reference"
    assert loaded.records[0]["reference_similarity"] != loaded.records[0]["reference_similarity"]  # NaN


def test_the_table_puts_the_run_beside_the_published_rows(tmp_path):
    from haiku_kit.evaluate.report import write_report

    gens = Generations([[POEM]], [[False]], [[20]], 50, [[POEM + "\n<end_of_turn>"]])
    result = ev.evaluate(gens, ["frogs"], [_prompt("frogs")], scorer=FakeScorer(), reference=True,
                         meta={"protocol": "reference", "schedule": "SFT 100"})
    table = P.reference_markdown({"sft": result})
    assert "| sft (this run) | SFT 100 | 1 | 1.0000" in table
    for name, schedule, preset, haiku, *_ in P.PUBLISHED:
        assert f"| {name} (published; kit preset `{preset}`) | {schedule} | 592 | {haiku:.4f}" in table
    assert "| gemma-3-1b-fullrun (published; kit preset `ref-full`) | SFT 100 -> sparse GRPO 1,000 -> " \
           "dense GRPO 1,000 | 592 | 0.2348" in table
    assert P.reference_markdown({"sft": ev.evaluate([POEM], ["frogs"], similarity=False)}) == ""
    write_report({"sft": result}, tmp_path)
    assert (tmp_path / "reference.md").read_text() == table
    assert "Reference protocol" in (tmp_path / "report.md").read_text()


def test_every_published_row_names_a_preset_that_trains_its_schedule():
    from haiku_kit.runs import schedule

    for _name, trained, preset, *_ in P.PUBLISHED[1:]:
        cfg = load_preset(preset)
        assert schedule(cfg, "grpo" if "GRPO" in trained else "sft") == trained


def test_cli_eval_under_the_reference_protocol(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from haiku_kit.cli import main

    monkeypatch.setattr("haiku_kit.verify.similarity.get_scorer", lambda *a, **k: FakeScorer())
    data = tmp_path / "eval_data.json"
    data.write_text(json.dumps([{"conversations": [
        {"role": "user", "content": f"Generate a haiku about the following topic: {t}\n"},
        {"role": "assistant", "content": POEM}]} for t in ("frogs", "moon", "rain")]))
    base = ["eval", "--model", str(tiny_model_dir), "--protocol", "reference"]
    assert main(base + ["--k", "4", "--data", str(data), "--out", str(tmp_path / "bad")]) == 2
    assert "--protocol reference fixes one sample" in capsys.readouterr().err
    assert main(base + ["--max-new-tokens", "128", "--greedy", "--out", str(tmp_path / "bad")]) == 2
    assert "drop --max-new-tokens, --greedy" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "bad")]) == 2
    assert "needs the reference's eval prompts: --data" in capsys.readouterr().err
    assert main(base + ["--data", str(data), "--n", "2", "--out", str(tmp_path / "out")]) == 0
    loaded = ev.EvalResult.load(tmp_path / "out")
    assert loaded.meta["protocol"] == "reference" and loaded.meta["max_new_tokens"] == 50
    assert loaded.meta["sampling"] == {"temperature": 1.0, "top_p": 0.95, "top_k": 64, "do_sample": True}
    assert len(loaded.records) == 2 and "reference_haiku" in loaded.metrics
    assert "Reference protocol" in capsys.readouterr().out
