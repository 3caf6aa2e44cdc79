"""The embedded Gemma 3 270M: cache validation/rebuild, tokenizer ids, loss, generation."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from haiku_kit.model import embedded
from haiku_kit.model.embedded import MARKER, STAMP, validate_model_dir, write_marker

# fmt: off
REFERENCE_IDS = {
    "The quick brown fox jumps over the lazy dog.": [
        2, 818, 3823, 8864, 37423, 38167, 1024, 506, 31770, 4799, 236761,
    ],
    "Autumn rain falls soft\non the quiet temple roof —\nfrogs sing in the dark": [
        2, 66410, 6927, 16071, 3538, 107, 498, 506, 12010, 20376, 11414, 2192, 107, 53519,
        6174, 2418, 528, 506, 4996,
    ],
    "<start_of_turn>user\nWrite a haiku about snow.<end_of_turn>\n<start_of_turn>model\n": [
        2, 105, 2364, 107, 6974, 496, 678, 20517, 1003, 7613, 236761, 106, 107, 105, 4368, 107,
    ],
    "naïve café, 1999!": [
        2, 1789, 238527, 560, 33443, 236764, 236743, 236770, 236819, 236819, 236819, 236888,
    ],
}
# fmt: on

PARAGRAPH = (
    "The history of the city goes back more than two thousand years. It was founded as a small "
    "fishing village on the banks of the river, and over the centuries it grew into one of the "
    "most important trading ports in the region. Today it is known for its old churches, its "
    "narrow streets and its busy market, which attracts visitors from all over the world."
)


# --------------------------------------------------------------------------- cache (fast)


def _fake_model_dir(root):
    folder = root / embedded.MODEL_FOLDER
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    (folder / "tokenizer.json").write_text("{}")
    write_marker(folder)
    return folder


def test_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path / "c"))
    assert embedded.cache_root() == tmp_path / "c"
    monkeypatch.delenv(embedded.CACHE_ENV)
    assert embedded.cache_root().name == "haiku-kit"


def test_complete_folder_validates(tmp_path):
    folder = _fake_model_dir(tmp_path)
    assert validate_model_dir(folder) == []
    assert validate_model_dir(folder, deep=True) == []


def test_missing_marker_is_partial(tmp_path):
    folder = _fake_model_dir(tmp_path)
    (folder / MARKER).unlink()
    assert any("missing" in p for p in validate_model_dir(folder))


def test_truncated_file_detected(tmp_path):
    folder = _fake_model_dir(tmp_path)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    problems = validate_model_dir(folder)
    assert problems and "model.safetensors" in problems[0]


def test_deleted_file_detected(tmp_path):
    folder = _fake_model_dir(tmp_path)
    (folder / "tokenizer.json").unlink()
    assert any("tokenizer.json" in p for p in validate_model_dir(folder))


def test_same_size_corruption_detected_without_deep_check(tmp_path):
    folder = _fake_model_dir(tmp_path)
    (folder / "model.safetensors").write_bytes(b"y" * 1000)
    problems = validate_model_dir(folder)
    assert problems and "model.safetensors changed" in problems[0]
    assert validate_model_dir(folder, deep=True)


def _settled_model_dir(root):
    """A fake cache whose stamp trusts every file (files older than RACY_SECONDS)."""
    folder = _fake_model_dir(root)
    old = time.time() - 10 * embedded.RACY_SECONDS
    for path in folder.iterdir():
        os.utime(path, (old, old))
    time.sleep(embedded.RACY_SECONDS + 0.2)  # ctime cannot be set back: let it settle
    assert validate_model_dir(folder) == []  # hashes once, then stamps the settled files
    return folder


def _count_hashes(monkeypatch):
    hashed = []
    real = embedded._sha256

    def counting(path):
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(embedded, "_sha256", counting)
    return hashed


def test_unchanged_cache_is_not_rehashed_and_zeroed_bytes_are_caught(tmp_path, monkeypatch):
    folder = _settled_model_dir(tmp_path)
    hashed = _count_hashes(monkeypatch)
    assert validate_model_dir(folder) == [] and hashed == []  # the second load: stat only
    weights = folder / "model.safetensors"
    before = weights.stat()
    with weights.open("r+b") as fh:  # zero 200 bytes in place: same size, same inode
        fh.seek(300)
        fh.write(bytes(200))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # and hide the mtime
    assert weights.stat().st_size == before.st_size and weights.stat().st_ino == before.st_ino
    problems = validate_model_dir(folder)
    assert hashed == ["model.safetensors"]  # only the changed file is hashed
    assert problems == [f"{weights} changed: its bytes differ from the sha256 in {folder / MARKER}"]


def test_touched_but_unchanged_file_is_rehashed_once(tmp_path, monkeypatch):
    folder = _settled_model_dir(tmp_path)
    hashed = _count_hashes(monkeypatch)
    (folder / "tokenizer.json").write_text("{}")  # same bytes, new mtime and ctime
    assert validate_model_dir(folder) == [] and hashed == ["tokenizer.json"]


def test_garbled_or_missing_stamp_falls_back_to_hashing(tmp_path):
    folder = _fake_model_dir(tmp_path)
    (folder / STAMP).write_text("{not json")
    (folder / "config.json").write_text("[]")  # same size, garbage
    assert any("config.json changed" in p for p in validate_model_dir(folder))
    (folder / STAMP).unlink()
    assert any("config.json changed" in p for p in validate_model_dir(folder))


def test_unwritable_stamp_still_validates(tmp_path):
    """A cache where the stamp cannot be written (read-only, here a folder in its place) is
    hashed on every load, still correct, and leaves no temp file."""
    folder = _fake_model_dir(tmp_path)
    (folder / STAMP).unlink()
    (folder / STAMP).mkdir()
    assert validate_model_dir(folder) == []
    (folder / "config.json").write_text("[]")
    assert any("config.json changed" in p for p in validate_model_dir(folder))
    assert [p.name for p in folder.iterdir() if p.name.startswith(".stamp")] == []


def test_same_size_garbage_config_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    folder = _fake_model_dir(tmp_path)
    (folder / "config.json").write_text("[]")  # same size as "{}"
    built = []

    def fake_build(out_dir):
        built.append(out_dir)
        (out_dir / "config.json").write_text('{"model_type": "gemma3_text"}')
        (out_dir / "model.safetensors").write_bytes(b"z" * 50)
        (out_dir / "tokenizer.json").write_text("{}")
        write_marker(out_dir)

    monkeypatch.setattr(embedded, "build_model_dir", fake_build)
    assert embedded.embedded_model_dir() == folder and len(built) == 1
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "gemma3_text"}
    assert validate_model_dir(folder, deep=True) == []


def test_garbled_marker_detected(tmp_path):
    folder = _fake_model_dir(tmp_path)
    (folder / MARKER).write_text("{not json")
    assert validate_model_dir(folder)


def test_partial_cache_is_rebuilt_atomically(tmp_path, monkeypatch):
    """A partial folder is replaced by a fresh build; the build runs in a temp dir."""
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    partial = _fake_model_dir(tmp_path)
    (partial / "model.safetensors").write_bytes(b"half")
    stale = tmp_path / f".tmp-{embedded.MODEL_FOLDER}-killed"  # from a SIGKILLed build
    stale.mkdir()
    built_in = []

    def fake_build(out_dir):
        built_in.append(out_dir)
        assert out_dir != partial and out_dir.parent == tmp_path
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"z" * 50)
        (out_dir / "tokenizer.json").write_text("{}")
        write_marker(out_dir)

    monkeypatch.setattr(embedded, "build_model_dir", fake_build)
    result = embedded.embedded_model_dir()
    assert result == partial and len(built_in) == 1
    assert validate_model_dir(result) == []
    assert (result / "model.safetensors").read_bytes() == b"z" * 50
    assert embedded.embedded_model_dir() == result and len(built_in) == 1  # reused
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_failed_build_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))

    def broken_build(out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt  # an interrupted build

    monkeypatch.setattr(embedded, "build_model_dir", broken_build)
    with pytest.raises(KeyboardInterrupt):
        embedded.embedded_model_dir()
    assert not (tmp_path / embedded.MODEL_FOLDER).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_real_cache_is_complete(embedded_dir):
    assert validate_model_dir(embedded_dir) == []
    marker = json.loads((embedded_dir / MARKER).read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(marker["files"])


@pytest.mark.slow
def test_real_cache_copy_with_removed_file_is_detected(embedded_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "tokenizer_config.json", MARKER):
        shutil.copy2(embedded_dir / name, copy / name)
    problems = validate_model_dir(copy)
    assert any("model.safetensors" in p for p in problems)


@pytest.mark.slow
@pytest.mark.parametrize("text", list(REFERENCE_IDS))
def test_tokenizer_matches_reference_ids(embedded, text):
    _, tokenizer = embedded
    assert tokenizer(text, add_special_tokens=True)["input_ids"] == REFERENCE_IDS[text]


@pytest.mark.slow
def test_tokenizer_specials_and_round_trip(embedded):
    _, tok = embedded
    assert (tok.bos_token, tok.bos_token_id) == ("<bos>", 2)
    assert (tok.eos_token, tok.eos_token_id) == ("<eos>", 1)
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 0)
    assert len(tok) == 262144
    assert tok.convert_tokens_to_ids("<end_of_turn>") == 106
    for text in list(REFERENCE_IDS) + ["tabs\tand  double  spaces", "emoji 🍂 leaf"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


@pytest.mark.slow
def test_chat_template_and_assistant_mask(embedded):
    _, tok = embedded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a haiku about snow."},
        {"role": "assistant", "content": "a\nb\nc"},
    ]
    text = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nWrite a haiku about snow.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained) == "a\nb\nc<end_of_turn>\n"
    assert 106 in trained  # the stop token is learned


@pytest.mark.slow
def test_chat_template_accepted_by_trl(embedded):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    _, tok = embedded
    assert has_generation_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)


@pytest.mark.slow
def test_loss_on_english_paragraph(embedded):
    model, tok = embedded
    enc = tok(PARAGRAPH, return_tensors="pt")
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss.item()
    assert loss < 4.0, loss


@pytest.mark.slow
def test_knows_paris(embedded):
    """This quantized *base* model's greedy continuation of "The capital of France is" is
    " the capital of the country of France..."; " Paris" is its 3rd choice. So check the
    ranking for that prompt and a greedy continuation of a question."""
    model, tok = embedded
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        top = model(**enc).logits[0, -1].topk(3).indices.tolist()
    assert tok.convert_tokens_to_ids("▁Paris") in top
    enc = tok("Q: What is the capital of France?\nA:", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])


@pytest.mark.slow
def test_generation_stops_at_end_of_turn(embedded):
    model, _ = embedded
    assert set(model.generation_config.eos_token_id) >= {1, 106}
    assert model.dtype == torch.float32


@pytest.mark.slow
def test_real_cache_zeroed_in_place_is_rebuilt(embedded_dir, tmp_path, monkeypatch):
    """200 MB of the real cached weights zeroed in place (same size) are caught before any load,
    and the cache is rebuilt to the same bytes (in a temp HAIKU_KIT_CACHE)."""
    cache = tmp_path / "cache"
    folder = cache / embedded.MODEL_FOLDER
    shutil.copytree(embedded_dir, folder)
    monkeypatch.setenv(embedded.CACHE_ENV, str(cache))
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as fh:
        fh.seek(size // 4)
        for _ in range(200):
            fh.write(bytes(1 << 20))
    assert weights.stat().st_size == size
    assert any("model.safetensors changed" in p for p in validate_model_dir(folder))
    assert embedded.embedded_model_dir() == folder
    assert validate_model_dir(folder, deep=True) == []
    expected = json.loads((embedded_dir / MARKER).read_text())["files"]["model.safetensors"]
    assert embedded._sha256(weights) == expected["sha256"]
