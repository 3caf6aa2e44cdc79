"""generate.py: batched seeded generation, stop tokens, one BOS, write_haiku."""

from __future__ import annotations

import pytest

from haiku_kit.errors import DataError
from haiku_kit.evaluate import scoring as ev
from haiku_kit.generate import write as gen
from haiku_kit.verify import haiku as hk

PROMPT = [{"role": "user", "content": "Generate a haiku about the following topic: frogs"}]
HAIKU_A = "frogs sing in the pond\nthe moon floats on the water\nnight is calm and cool"
HAIKU_B = "autumn rain taps slow\non the roof of the tool shed\nrust blooms on the rake"
TWO_LINES = "frogs sing in the pond\nthe moon floats on the water"


def test_pick_best_prefers_valid_then_distance_then_similarity():
    checks = [hk.check(TWO_LINES), hk.check(HAIKU_A), hk.check(HAIKU_B)]
    assert gen.pick_best(checks, [0.9, 0.1, 0.2]) == 2
    off = [hk.check("a\nb\nc"), hk.check(TWO_LINES)]
    assert gen.pick_best(off, [0.9, 0.1]) == int(off[1].distance < off[0].distance)
    # among valid poems, one that reads as English beats a more similar filler one
    assert gen.pick_best(checks, [0.9, 0.9, 0.2], fluent=[True, False, True]) == 2
    assert gen.pick_best(checks, [0.9, 0.9, 0.2], fluent=[True, True, False]) == 1
    # ... and one of its own words beats a more similar copy of the topic
    assert gen.pick_best(checks, [0.9, 0.9, 0.2], original=[True, False, True]) == 2


def test_a_copy_of_the_topic_or_the_instruction_is_not_original():
    from haiku_kit.verify.judge import is_original

    topic = "a frog jumps into an old silent pond at dawn"
    assert not is_original("a frog jumps into\nan old silent pond at\ndawn", topic)
    assert not is_original("write a haiku about\na frog jumps into an old\nsilent pond at dawn", topic)
    assert is_original(HAIKU_A, topic)


# --------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from haiku_kit.model.load import load_model

    return load_model(str(tiny_model_dir), backend="hf", lora=None)


def scripted_head(scripts, vocab):
    """An lm_head replacement: on generation step s, row r gets token scripts[r][s] (the last
    one repeated), so the test knows exactly what generate() must produce."""
    import torch

    class ScriptedHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.step = 0

        def forward(self, hidden):
            logits = torch.zeros(hidden.shape[0], hidden.shape[1], vocab)
            for r in range(hidden.shape[0]):
                script = scripts[r]
                logits[r, :, script[min(self.step, len(script) - 1)]] = 100.0
            self.step += 1
            return logits

    return ScriptedHead()


def test_generate_stops_at_end_of_turn_and_reports_the_limit(tiny):
    model, tokenizer = tiny
    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert eot == 106
    frog, pond = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("frog", " pond"))
    real_head = model.lm_head
    model.lm_head = scripted_head([[frog, pond, eot, frog], [frog]], model.config.vocab_size)
    try:
        gens = gen.generate(model, tokenizer, [PROMPT, "plain text prompt"], k=1, batch_size=2,
                           max_new_tokens=6, sampling=gen.SamplingSettings.greedy(),
                           progress=False)
    finally:
        model.lm_head = real_head
    assert gens.texts == [["frog pond"], ["frog" * 6]]
    assert gens.hit_limit == [[False], [True]]
    assert gens.num_tokens == [[3], [6]]
    assert gens.hit_limit_share == 0.5
    result = ev.evaluate(gens, ["frogs", "frogs"], similarity=False)
    assert result.metrics["hit_limit"] == 0.5 and result.metrics["tokens"] == 4.5


def test_encode_gives_one_bos_and_left_padding(tiny):
    _, tokenizer = tiny
    chat = gen.prompt_strings(tokenizer, [PROMPT])[0]
    assert chat.startswith(tokenizer.bos_token)
    enc = gen.encode(tokenizer, [chat, "plain"])
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    for row, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist()):
        real = [t for t, m in zip(row, mask) if m]
        assert real[0] == bos and real.count(bos) == 1
    assert enc["input_ids"][1, 0].item() == pad  # the short prompt is padded on the left


def test_generate_k_samples_is_seeded(tiny):
    model, tokenizer = tiny
    side = tokenizer.padding_side
    run = {"k": 3, "batch_size": 4, "max_new_tokens": 4, "progress": False}
    a = gen.generate(model, tokenizer, [PROMPT, PROMPT], seed=1, **run)
    b = gen.generate(model, tokenizer, [PROMPT, PROMPT], seed=1, **run)
    c = gen.generate(model, tokenizer, [PROMPT, PROMPT], seed=2, **run)
    assert [len(t) for t in a.texts] == [3, 3]
    assert a.texts == b.texts
    assert a.texts != c.texts
    assert tokenizer.padding_side == side
    with pytest.raises(DataError, match="prompt 0"):
        gen.generate(model, tokenizer, [42], progress=False)


# --------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_write_haiku_with_the_embedded_model(embedded):
    model, tokenizer = embedded
    written = gen.write_haiku("autumn rain", model=model, tokenizer=tokenizer, k=2,
                             max_new_tokens=24, seed=0)
    assert isinstance(written.poem, str) and len(written.candidates) == 2
    assert written.reason and written.diagnosis().startswith("syllables per line")
    best = gen.pick_best([hk.check(c["poem"]) for c in written.candidates],
                        [c["similarity"] for c in written.candidates],
                        [not c["fluency_problems"] for c in written.candidates])
    assert written.problems == tuple(written.candidates[best]["fluency_problems"])
    assert written.diagnosis().splitlines()[-1].startswith(("reads as English", "reads as filler"))
    assert written.poem == written.candidates[best]["poem"]
