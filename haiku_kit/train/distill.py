"""Self-distillation after SFT (expert iteration): the SFT model writes one poem per training
topic through the syllable-constrained decoder, the verifier keeps the valid, on-topic ones, and
SFT continues on those poems alone.

Why: SFT on human haiku teaches the form, but the model's own lines miss by a syllable or two.
The constrained decoder turns the model's own drafts into valid 5-7-5 poems with small edits
(a different word here, an earlier line break there); training on them teaches the model which
of its own lines land, in its own words. Measured in research/log.md (D1-D4). The
constrained decoder only makes training data here: every eval row of the model that results is
free sampling unless it is named "+ constrained".

Two steps, each visible in notebook 03 after SFT: `distill_trainer(cfg, model, tokenizer)`
samples the poems (RUN/sft/distill/round-N/poems.jsonl, reused by a rerun) and builds TRL's
SFTTrainer on them, continuing the SFT model; `save_distill(cfg, trainer)` keeps the plain SFT
adapter as RUN/sft/distill/sft-adapter and writes the distilled one to RUN/sft/adapter, which the
rest of the pipeline uses. `distill.rounds` repeats both (expert iteration), each round sampling
from the model the previous round trained. With `distill.corpus`, round 1 reads its poems from a
file instead: "embedded" is resources/distilled.jsonl, the verified poems `cpu-full`'s GRPO
model wrote on training topics (scripts/build_distilled_corpus.py --teacher grpo), which lets a
short run learn from where that whole pipeline ended.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

from haiku_kit import ranks
from haiku_kit.config import DistillSettings, RunConfig
from haiku_kit.data.sources import load_table, load_topic_list
from haiku_kit.data.splits import load_run_data
from haiku_kit.data.topics import far_from, fresh_topics
from haiku_kit.generate.write import SamplingSettings, generate
from haiku_kit.model.backends import resolve_device
from haiku_kit.runs import RunPaths
from haiku_kit.train.common import (
    KitPhase,
    record_effective,
    save_trained_adapter,
    start_stage,
    train_phase,
    write_logs,
)
from haiku_kit.train.sft import build_sft_trainer, sft_effective
from haiku_kit.verify import haiku as hk
from haiku_kit.verify.text import build_prompt

POEMS = "poems.jsonl"


def distill_dir(cfg: RunConfig, round_: int | None = None) -> Path:
    """RUN/sft/distill, or the folder of one round: RUN/sft/distill/round-N."""
    folder = RunPaths.of(cfg).phase_dir("sft") / "distill"
    return folder if round_ is None else folder / f"round-{round_}"


def distilled_answers(cfg: RunConfig) -> list[str]:
    """Every round's kept poems in this run (training answers too, for the overlap checks)."""
    return [json.loads(line)["haiku"]
            for file in sorted(distill_dir(cfg).glob(f"round-*/{POEMS}"))
            for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_prompts(dataset, n: int, extra: Sequence[str] = ()) -> list[dict]:
    """The first n distinct topics of the sft then rl splits, with their prompts (never eval),
    then the `extra` topics that are no near-duplicate of an eval topic or of those."""
    seen, out = set(), []
    for split in ("sft", "rl"):
        if split not in dataset:
            continue
        for row in dataset[split]:
            if row["topic"] not in seen and len(out) < n:
                seen.add(row["topic"])
                out.append({"topic": row["topic"], "prompt": row["prompt"]})
    if extra:
        avoid = list(dataset["eval"]["topic"]) if "eval" in dataset else []
        out += [{"topic": topic, "prompt": build_prompt(topic)}
                for topic in fresh_topics(extra, avoid, [r["topic"] for r in out])]
    return out


def corpus_path(source: str) -> Path:
    """distill.corpus as a file: "embedded" is the kit's resources/distilled.jsonl."""
    if source == "embedded":
        return Path(str(resources.files("haiku_kit") / "resources" / "distilled.jsonl"))
    return Path(source)


def corpus_poems(source: str, dataset, judge: bool = False) -> tuple[list[dict], dict]:
    """distill.corpus's poems as round 1's kept rows: those check accepts (and with `judge`,
    those the judge's rules call good), deduplicated, on topics that are no near-duplicate of an
    eval topic of `dataset`. Returns (rows, counts)."""
    rows = load_table(corpus_path(source), on_bad_row="raise")
    avoid = list(dataset["eval"]["topic"]) if "eval" in dataset else []
    named = [r for r in rows if r["topic"]]
    allowed = set(far_from(sorted({r["topic"] for r in named}), avoid))
    usable = [r for r in named if r["topic"] in allowed]
    kept, _ = keep_verified([{"topic": r["topic"], "prompt": build_prompt(r["topic"])}
                             for r in usable], [[r["haiku"]] for r in usable], min_similarity=-1)
    valid = len(kept)
    if judge:
        kept = judged_good(kept)
    return [{**r, "source_id": f"corpus:{i}"} for i, r in enumerate(kept)], {
        "corpus": str(corpus_path(source)), "rows": len(rows),
        "no_topic": len(rows) - len(named), "near_eval_topic": len(named) - len(usable),
        "valid": valid, **({"judged_good": len(kept)} if judge else {}), "kept": len(kept)}


def word_syllable_limit(s: DistillSettings, round_: int) -> int:
    """distill.max_word_syllables for round N (1-based): one number for every round, or a list
    whose last entry holds for the rounds after it. 0: any word."""
    limits = s.max_word_syllables
    if isinstance(limits, int):
        return limits
    return limits[min(round_, len(limits)) - 1]


def sample_verified(model, tokenizer, rows: list[dict], s: DistillSettings, seed: int = 0,
                    scorer=None, round_: int = 1) -> tuple[list[dict], dict]:
    """Constrained poems for rows ({topic, prompt}); keeps those check accepts, deduplicated,
    with cos(topic, poem) >= s.min_similarity. Returns (kept rows, counts)."""
    sampling = SamplingSettings(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    limit = word_syllable_limit(s, round_)
    gens = generate(model, tokenizer, [r["prompt"] for r in rows], k=s.k, seed=seed,
                    sampling=sampling, batch_size=s.batch_size, max_new_tokens=s.max_new_tokens,
                    constrained=True, candidates=s.candidates, max_word_syllables=limit,
                    free_words=[r["topic"] for r in rows] if limit and s.topic_words else None,
                    clean_line_ends=s.clean_line_ends)
    kept, valid = keep_verified(rows, gens.texts, s.min_similarity, scorer)
    verified = len(kept)
    if s.judge:
        kept = judged_good(kept)
    return kept, {"prompts": len(rows), "sampled": len(rows) * s.k,
                  "max_word_syllables": limit, "topic_words": bool(limit and s.topic_words),
                  "clean_line_ends": s.clean_line_ends,
                  "drafts": len(rows) * s.k * s.candidates, "valid": valid,
                  **({"verified": verified, "judged_good": len(kept)} if s.judge else {}),
                  "kept": len(kept)}


def judged_good(kept: list[dict]) -> list[dict]:
    """keep_verified's rows less those the judge's rules do not call good (filler, off topic,
    a copy); the cosines already computed are reused."""
    if not kept:
        return kept
    from haiku_kit.verify.judge import Judge

    verdicts = Judge().judge([r["haiku"] for r in kept], [r["topic"] for r in kept],
                             cosines=[r["cosine"] for r in kept]
                             if all(r.get("cosine") is not None for r in kept) else None)
    return [r for r, v in zip(kept, verdicts) if v.good]


def keep_verified(rows: list[dict], texts: list[list[str]], min_similarity: float = 0.5,
                  scorer=None) -> tuple[list[dict], int]:
    """Each row ({topic, ...}) with each of its completions (texts[i]) whose poem check accepts,
    deduplicated, and with cos(topic, poem) >= min_similarity (-1: no filter). Returns (kept
    rows with "haiku", "cosine" (None unfiltered) and "source_id", the number of valid poems)."""
    candidates, seen = [], set()
    for row, completions in zip(rows, texts):
        for text in completions:
            poem = hk.extract_poem(text).poem
            if hk.check(poem).is_haiku and poem not in seen:
                seen.add(poem)
                candidates.append({**row, "haiku": poem, "cosine": None})
    if candidates and min_similarity > -1:
        if scorer is None:
            from haiku_kit.verify.similarity import get_scorer

            scorer = get_scorer()
        sims = scorer.cosine([c["topic"] for c in candidates], [c["haiku"] for c in candidates])
        candidates = [{**c, "cosine": sim} for c, sim in zip(candidates, sims)
                      if sim >= min_similarity]
    return [{**c, "source_id": f"self:{i}"} for i, c in enumerate(candidates)], len(seen)


def best_per_topic(kept: list[dict], n: int) -> list[dict]:
    """keep_verified's rows less all but each topic's n most similar poems (0: all), in order:
    best of k, so that a corpus teaches the teacher's most topical poems (research/log.md
    DC12)."""
    if n <= 0:
        return kept
    ranked: dict[str, list[float]] = {}
    for row in kept:
        ranked.setdefault(row["topic"], []).append(row["cosine"])
    floor = {topic: sorted(sims, reverse=True)[:n][-1] for topic, sims in ranked.items()}
    out, taken = [], dict.fromkeys(ranked, 0)
    for row in kept:
        if row["cosine"] >= floor[row["topic"]] and taken[row["topic"]] < n:
            taken[row["topic"]] += 1
            out.append(row)
    return out


def poems_dataset(kept: list[dict]):
    """SFT rows (chat "messages") of the kept poems, shuffled."""
    import datasets

    records = [{"topic": r["topic"], "haiku": r["haiku"], "source_id": r["source_id"],
                "prompt": r["prompt"],
                "messages": list(r["prompt"]) + [{"role": "assistant", "content": r["haiku"]}]}
               for r in kept]
    return datasets.Dataset.from_list(records).shuffle(seed=0)


def round_poems(cfg: RunConfig, model, tokenizer, dataset, round_: int) -> tuple[list[dict], dict]:
    """Round N's verified poems and how they were got: RUN/sft/distill/round-N/poems.jsonl when
    a run wrote it before, else sampled (round 1: read from distill.corpus when set) and written."""
    s = cfg.distill
    folder = distill_dir(cfg, round_)
    poems_file = folder / POEMS
    if poems_file.is_file():
        kept = [json.loads(line) for line in poems_file.read_text(encoding="utf-8").splitlines()]
        return kept, {"reused": str(poems_file), "kept": len(kept)}
    if round_ == 1 and s.corpus:
        kept, stats = corpus_poems(s.corpus, dataset, judge=s.judge)
    else:
        extra = load_topic_list(s.extra_topics) if s.extra_topics else ()
        rows = training_prompts(dataset, s.topics, extra)
        kept, stats = sample_verified(model, tokenizer, rows, s, seed=cfg.seed + round_ - 1,
                                      round_=round_)
    folder.mkdir(parents=True, exist_ok=True)
    poems_file.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return kept, stats


def distill_trainer(cfg: RunConfig, model, tokenizer, dataset=None, resume_from_checkpoint=None,
                    fresh=False, round_: int = 1):
    """TRL's SFTTrainer continuing `model` (the SFT model, or the previous round's) on its own
    verified poems; None when distill.topics is 0 (and no distill.corpus) or `round_` >
    distill.rounds. Round N's poems are sampled once (round 1's read from distill.corpus when set)
    and kept in RUN/sft/distill/round-N/poems.jsonl, which a rerun reuses."""
    s = cfg.distill
    if (s.topics <= 0 and not s.corpus) or round_ > s.rounds:
        return None
    folder = distill_dir(cfg, round_)
    resume = start_stage(folder, resume_from_checkpoint, fresh)
    dataset = dataset if dataset is not None else load_run_data(cfg)
    # Under several processes the main one samples and writes the poems; all train on them.
    kept, stats = ranks.on_main(round_poems, cfg, model, tokenizer, dataset, round_)
    if ranks.is_main():
        print(f"self-distillation round {round_}/{s.rounds}, poems: {stats}")
    if not kept:
        print("no verified poem to distil: the SFT adapter stays as it is")
        return None
    dcfg = copy.deepcopy(cfg)
    dcfg.sft = replace(cfg.sft, max_steps=s.max_steps, learning_rate=s.learning_rate,
                       save_steps=s.save_steps)
    device = resolve_device(cfg)
    trainer = build_sft_trainer(dcfg, model, tokenizer, poems_dataset(kept), folder, device)
    trainer.kit_phase = KitPhase(f"distill-{round_}", folder, device, tokenizer, resume,
                                 dcfg.sft, rows=len(kept))
    trainer.distill_round, trainer.distill_stats = round_, stats
    record_effective(cfg, f"distill-{round_}", folder, sft_effective(trainer))
    return trainer


def save_distill(cfg: RunConfig, trainer) -> Path:
    """After trainer.train(): the round's adapter in RUN/sft/distill/round-N/adapter, and a copy
    as RUN/sft/adapter, whose path it returns (the rest of the pipeline reads it there). Round 1
    first moves the plain SFT adapter to RUN/sft/distill/sft-adapter: kept, never deleted."""
    kit = trainer.kit_phase
    write_logs(kit.folder)
    record_effective(cfg, kit.phase, kit.folder, sft_effective(trainer))
    own = save_trained_adapter(trainer, kit.folder / "adapter")
    return ranks.on_main(_install_adapter, cfg, own, trainer.distill_round)


def _install_adapter(cfg: RunConfig, own: Path, round_: int) -> Path:
    """RUN/sft/adapter := a copy of the round's adapter `own` (round 1 keeps the plain SFT one)."""
    adapter = RunPaths.of(cfg).sft_adapter
    if adapter.is_dir():
        if round_ == 1:
            before = distill_dir(cfg) / "sft-adapter"
            if before.exists():
                shutil.rmtree(before)  # the SFT phase just rewrote RUN/sft/adapter: newer
            shutil.move(str(adapter), str(before))
        else:  # a copy of the previous round's adapter, which stays in its round folder
            shutil.rmtree(adapter)
    shutil.copytree(own, adapter)
    return adapter


def distil_after_sft(cfg: RunConfig, model, tokenizer, adapter: Path, dataset=None,
                     resume_from_checkpoint=None, fresh=False) -> Path:
    """The SFT phase's last step: every round of self-distillation the config asks for
    (distill.topics > 0 or distill.corpus, distill.rounds), each sampling with the model the
    previous one trained; returns RUN/sft/adapter (`adapter` as it is when there is none)."""
    for round_ in range(1, cfg.distill.rounds + 1):
        trainer = distill_trainer(cfg, model, tokenizer, dataset, resume_from_checkpoint, fresh,
                                  round_)
        if trainer is None:
            break
        train_phase(trainer)
        adapter = save_distill(cfg, trainer)
    return adapter
