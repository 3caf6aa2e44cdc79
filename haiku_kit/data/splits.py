"""Haiku datasets: keep verified 5-7-5 poems, build disjoint SFT/RL/eval splits, read eval rows.

`build_splits` runs the filter steps below on loaded rows (data/sources.py), counting rows after
each one in a `FilterReport`, and writes a `datasets.DatasetDict` plus `{split}.jsonl` and
`manifest.json`:

    loaded -> three_lines -> syllables -> exact_dedup -> near_dedup -> topic -> similarity
    -> sampled (optional max_rows) -> sft / rl / eval

Splits are disjoint by poem (deduplicated first) and by topic (rows are grouped by their
normalised topic and whole groups are dealt to splits), so RL never reuses an SFT row.
`load_run_data(cfg)` gives a run's splits, `load_eval_data(spec)` the rows an evaluation uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from haiku_kit import ranks
from haiku_kit.config import RunConfig
from haiku_kit.data.sources import (
    EMBEDDED,
    FilterReport,
    Row,
    embedded_path,
    is_chat_file,
    load_chat_prompts,
    load_embedded,
    load_prompt_table,
    load_source,
    normalize_poem,
    rows_of,
)
from haiku_kit.data.topics import NEAR_TOPIC_COSINE, fill_topics, near_topic_groups
from haiku_kit.errors import DataError
from haiku_kit.runs import run_data_dir
from haiku_kit.verify import similarity
from haiku_kit.verify.haiku import check
from haiku_kit.verify.text import DEFAULT_TEMPLATE, build_prompt, normalize

log = logging.getLogger(__name__)

SPLITS = ("sft", "rl", "eval")


# --------------------------------------------------------------------------- filtering


def near_key(poem: str) -> str:
    """Near-duplicate key: lowercase letters only (spacing, punctuation, digits ignored)."""
    return re.sub(r"[^a-z]", "", poem.lower())


def _step(report: FilterReport, name: str, rows: list[Row], before: int) -> list[Row]:
    report.add(name, len(rows))
    if not rows:
        raise DataError(f"no rows left after the {name!r} filter (it removed all {before}); "
                        f"counts so far:\n{report}")
    return rows


def filter_rows(
    rows: Sequence[Row],
    pattern: Sequence[int] = (5, 7, 5),
    strict: bool = False,
    report: FilterReport | None = None,
) -> list[Row]:
    """Keep 3-line poems the verifier accepts, dropping exact then near duplicates.

    Raises DataError naming the filter that removed every row.
    """
    report = report if report is not None else FilterReport()
    rows = [{**r, "haiku": normalize_poem(r["haiku"]), "topic": " ".join(r["topic"].split())}
            for r in rows]
    n = len(rows)
    _step(report, "loaded", rows, n)
    rows = _step(report, "three_lines", [r for r in rows if r["haiku"].count("\n") == 2], n)
    n = len(rows)
    rows = _step(report, "syllables",
                  [r for r in rows if check(r["haiku"], tuple(pattern), strict=strict).is_haiku],
                  n)
    for name, key in (("exact_dedup", lambda r: r["haiku"]), ("near_dedup", lambda r: near_key(r["haiku"]))):
        seen: set[str] = set()
        kept = []
        for row in rows:
            k = key(row)
            if k not in seen:
                seen.add(k)
                kept.append(row)
        rows = _step(report, name, kept, len(rows))
    return rows


# --------------------------------------------------------------------------- splits


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(f < 0 for f in values) or sum(values) <= 0:
        raise DataError(f"fractions must be three non-negative numbers (sft, rl, eval) with a "
                        f"positive sum, not {list(fractions)}")
    total = sum(values)
    return tuple(f / total for f in values)  # type: ignore[return-value]


def assign_splits(rows: Sequence[Row], fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
                  seed: int = 0, group_of: dict[str, str] | None = None) -> dict[str, list[Row]]:
    """Deal whole topic groups to sft/rl/eval so each split nears its share of rows.

    Groups are shuffled with `seed` and each goes to the split furthest below its target, so
    one normalised topic never spans two splits. `group_of` (topic -> group key, from
    topics.near_topic_groups) also keeps near-duplicate topics together.
    """
    shares = _check_fractions(fractions)
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = (group_of or {}).get(row["topic"]) or normalize(row["topic"])
        groups.setdefault(key, []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    targets = [share * len(rows) for share in shares]
    out: dict[str, list[Row]] = {name: [] for name in SPLITS}
    for key in keys:
        deficits = [t - len(out[name]) if t > 0 else float("-inf")
                    for t, name in zip(targets, SPLITS)]
        out[SPLITS[deficits.index(max(deficits))]].extend(groups[key])
    return out


def _features(with_messages: bool):
    import datasets

    turn = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    cols = {"topic": datasets.Value("string"), "haiku": datasets.Value("string"),
            "source_id": datasets.Value("string"), "prompt": turn}
    if with_messages:
        cols["messages"] = turn
    return datasets.Features(cols)


def _split_records(rows: Sequence[Row], name: str, template: str, system: str | None):
    records = []
    for row in rows:
        prompt = build_prompt(row["topic"], template, system)
        record = {"topic": row["topic"], "haiku": row["haiku"], "source_id": row["source_id"],
                  "prompt": prompt}
        if name == "sft":
            record["messages"] = prompt + [{"role": "assistant", "content": row["haiku"]}]
        records.append(record)
    return records


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_entry(spec: str) -> dict[str, Any]:
    path = embedded_path() if spec == EMBEDDED else Path(spec)
    if path.is_file():
        return {"source": spec, "sha256": sha256_file(path)}
    return {"source": spec, "sha256": None}  # a hub dataset or folder: named, not hashed


def build_splits(
    rows: Sequence[Row],
    out_dir: str | Path | None,
    fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    seed: int = 0,
    min_similarity: float | None = 0.5,
    *,
    pattern: Sequence[int] = (5, 7, 5),
    strict: bool = False,
    template: str = DEFAULT_TEMPLATE,
    system: str | None = None,
    topic_fn: Callable[[str], str] | None = None,
    similarity_model: str | None = None,
    max_rows: int | None = None,
    report: FilterReport | None = None,
    sources: Sequence[str] = (),
    near_topic_cosine: float | None = NEAR_TOPIC_COSINE,
):
    """Filter rows, split them into disjoint sft/rl/eval, and save them to `out_dir`.

    `min_similarity=None` skips the MiniLM topic-poem filter. With the filter on, topics whose
    MiniLM cosine reaches `near_topic_cosine` ("a kite" / "a kite in the wind") land in the
    same split, so eval topics have no near-duplicate among the training topics (None: group
    by the normalised topic only). `max_rows` samples that many
    rows (with `seed`) before splitting. `sources` (specs or paths) are hashed into the
    manifest. `out_dir=None` builds in memory only. Returns the DatasetDict.
    """
    import datasets

    shares = _check_fractions(fractions)
    report = report if report is not None else FilterReport()
    rows = filter_rows(rows, pattern, strict, report)
    before = len(rows)
    rows = [r for r in fill_topics(rows, topic_fn, similarity_model) if r["topic"]]
    rows = _step(report, "topic", rows, before)
    if min_similarity is not None:
        scores = similarity.cosine([r["topic"] for r in rows], [r["haiku"] for r in rows],
                        model=similarity_model)
        before = len(rows)
        rows = _step(report, "similarity",
                      [r for r, s in zip(rows, scores) if s >= min_similarity], before)
    if max_rows is not None and len(rows) > max_rows:
        if max_rows < 1:
            raise DataError(f"max_rows must be at least 1, not {max_rows}")
        rows = random.Random(seed).sample(list(rows), max_rows)
        report.add("sampled", len(rows))
    group_of = None
    if min_similarity is not None and near_topic_cosine is not None:
        group_of = near_topic_groups([r["topic"] for r in rows], near_topic_cosine, similarity_model)
    parts = assign_splits(rows, shares, seed, group_of)
    for name in SPLITS:
        report.add(name, len(parts[name]))
    empty = [name for name, share in zip(SPLITS, shares) if share > 0 and not parts[name]]
    if empty:  # a run would train or evaluate on nothing, and only say so stages later
        raise DataError(f"{len(rows)} rows left after filtering: too few for the fractions "
                        f"{list(shares)} (the {', '.join(empty)} split got none); add rows, or "
                        "set that fraction to 0")

    dd = datasets.DatasetDict()
    for name in SPLITS:
        features = _features(name == "sft")
        records = _split_records(parts[name], name, template, system)
        # Column-wise so an empty split (fraction 0) still has its columns.
        dd[name] = datasets.Dataset.from_dict(
            {col: [r[col] for r in records] for col in features}, features=features)
    if out_dir is not None:
        _save(dd, Path(out_dir), report, {
            "seed": seed, "fractions": list(shares), "min_similarity": min_similarity,
            "pattern": list(pattern), "strict": strict, "template": template, "system": system,
            "max_rows": max_rows,
            "topic_source": "topic_fn" if topic_fn else "source or MiniLM keyphrase",
            "sources": [_source_entry(s) for s in sources],
        })
    return dd


def _save(dd, out_dir: Path, report: FilterReport, settings: dict[str, Any]) -> None:
    from datasets.utils import logging as ds_logging

    from haiku_kit import __version__  # the package root: no import loop

    out_dir.mkdir(parents=True, exist_ok=True)
    quiet = ds_logging.is_progress_bar_enabled()
    if quiet:
        ds_logging.disable_progress_bar()  # one bar per split is noise in CLI output
    try:
        dd.save_to_disk(str(out_dir))
    finally:
        if quiet:
            ds_logging.enable_progress_bar()
    for name, split in dd.items():
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for record in split:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    manifest = {
        "haiku_kit_version": __version__,
        **settings,
        "phases": report.to_dict()["phases"],
        "bad_rows": report.bad_rows,
        "splits": {name: len(split) for name, split in dd.items()},
        "topics": {name: len({normalize(t) for t in split["topic"]})
                   for name, split in dd.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                           encoding="utf-8")


def load_splits(out_dir: str | Path):
    """The DatasetDict saved by build_splits."""
    import datasets

    out_dir = Path(out_dir)
    if not (out_dir / "dataset_dict.json").is_file():
        raise DataError(f"{out_dir}: not a splits folder (no dataset_dict.json); build one with "
                        f"`haiku-kit data build --out {out_dir}`")
    return datasets.load_from_disk(str(out_dir))


# --------------------------------------------------------------------------- a run's data


def build_run_splits(cfg: RunConfig, folder: Path) -> Path:
    """Build cfg.data.source into sft/rl/eval splits in `folder`, as the config says."""
    log.info("building dataset splits from %s into %s", cfg.data.source, folder)
    build_splits(load_source(cfg.data.source), folder, fractions=tuple(cfg.data.fractions),
                 seed=cfg.data.seed, min_similarity=cfg.data.min_similarity,
                 sources=[cfg.data.source])
    return folder


def load_run_data(cfg: RunConfig):
    """The run's DatasetDict: data.splits_dir if set, else RUN/data (built from data.source if absent)."""
    folder = run_data_dir(cfg)
    ranks.main_only(_ensure_run_splits, cfg, folder)  # under several processes: built once
    return load_splits(folder)


def _ensure_run_splits(cfg: RunConfig, folder: Path) -> None:
    if not (folder / "manifest.json").is_file():
        if cfg.data.splits_dir:
            raise DataError(
                f"data.splits_dir={folder} holds no dataset splits (no manifest.json); build them with "
                f"`haiku-kit data build --out {folder}` or unset data.splits_dir to build into RUN/data"
            )
        build_run_splits(cfg, folder)


def sft_answers(cfg: RunConfig) -> list[str]:
    """The SFT split's answers when the run's data is on disk (for the train-overlap monitor)."""
    folder = run_data_dir(cfg)
    if not (folder / "manifest.json").is_file():
        return []
    try:
        return list(load_splits(folder)["sft"]["haiku"])
    except Exception as err:  # noqa: BLE001 - the monitor is optional
        log.info("train-overlap monitor disabled: %s", err)
        return []


# --------------------------------------------------------------------------- eval rows


def _answers(splits) -> list[str]:
    """The training answers of a splits DatasetDict: its sft and rl poems."""
    return [h for name in ("sft", "rl") if name in splits for h in splits[name]["haiku"]]


def load_eval_data(spec: str | None, train: str | None = None) -> tuple[list[dict], list[str]]:
    """Eval rows ({topic, prompt, haiku?}) and training answers from --data / --train.

    spec: a splits folder (its eval split; training answers from its sft and rl splits), a
    .jsonl/.csv with a topic column, or the reference's chat .json ({"conversations": [...]},
    prompts used verbatim). None: the bundled dataset's eval split, built in memory.
    """
    answers: list[str] = []
    path = None if spec is None else Path(spec)
    if path is None or path.is_dir():
        # None: the bundled dataset, split in memory exactly as `haiku-kit data build` would.
        splits = build_splits(load_embedded(), None) if path is None else load_splits(path)
        if "eval" not in splits:
            raise DataError(f"{path}: the splits folder has no 'eval' split")
        rows = rows_of(splits["eval"])
        answers += _answers(splits)
    elif not path.is_file():
        raise FileNotFoundError(f"--data {spec}: no such file or folder")
    else:
        rows = load_chat_prompts(path) if is_chat_file(path) else load_prompt_table(path)
    for row in rows:
        if not row.get("prompt"):
            row["prompt"] = build_prompt(row["topic"])
    if train:
        answers += training_answers(Path(train))
    return rows, answers


def training_answers(path: Path) -> list[str]:
    """Training answers (raw text, for the exact-match overlap) from --train."""
    if not path.exists():
        raise FileNotFoundError(f"--train {path}: no such file or folder")
    if path.is_dir():
        return _answers(load_splits(path))
    rows = load_chat_prompts(path) if is_chat_file(path) else load_prompt_table(path)
    return [r["haiku"] for r in rows if isinstance(r.get("haiku"), str)]
