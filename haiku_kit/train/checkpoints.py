"""Where a training phase starts, without ever deleting a user's training state.

A phase folder holds checkpoints/checkpoint-N/ and logs (log.jsonl, samples.jsonl...). Rerunning
a phase:
- resumes from its newest complete checkpoint by default (as open-r1 does) and says so;
- `resume="latest"` insists on one (an error when there is none); a path resumes from it;
- `fresh=True` starts over and moves the old checkpoints and logs aside into
  `checkpoints.old-<time>/`; only `fresh="delete"` deletes them.
With no checkpoint to resume, old logs are moved aside too, never deleted. On resume, log lines
of the steps after the checkpoint (to be trained again), and a line torn by a kill, move to
`log.redone.jsonl`, so log.jsonl never holds a step twice.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from haiku_kit.errors import ConfigError, ModelLoadError

__all__ = [
    "CHECKPOINT_RE",
    "STATE_FILES",
    "StageStart",
    "checkpoint_step",
    "choose_checkpoint",
    "find_checkpoint",
    "prepare_phase",
    "rerun_command",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILES = ("log.jsonl", "log.csv", "samples.jsonl", "training.png", "collapse.yaml")
_STEP_LOGS = ("log.jsonl", "samples.jsonl")  # one JSON object per line, each with a "step"
FRESH_CHOICES = (False, True, "aside", "delete")


def checkpoint_step(path: Path) -> int | None:
    """global_step of a complete checkpoint (its trainer_state.json is written last), else None."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        step = state["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


def find_checkpoint(phase_dir: str | Path) -> Path | None:
    """The newest complete checkpoint-N under phase_dir or phase_dir/checkpoints; a folder left
    half-written by a killed save is passed over (and kept)."""
    phase_dir = Path(phase_dir)
    found = []
    for folder in (phase_dir, phase_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                m = CHECKPOINT_RE.match(path.name)
                if m and path.is_dir():
                    found.append((int(m.group(1)), path))
    for _, path in sorted(found, reverse=True):
        if checkpoint_step(path) is not None:
            return path
        logger.warning("%s is incomplete (no readable trainer_state.json): not resumed", path)
    return None


def resolve_checkpoint(resume: str | Path, phase_dir: Path) -> Path:
    """ "latest" -> the newest checkpoint of the phase; a path -> that checkpoint (or the newest
    one inside it). ModelLoadError naming what is missing otherwise."""
    if str(resume) == "latest":
        found = find_checkpoint(phase_dir)
        if found is None:
            raise ModelLoadError(
                f"--resume latest: {phase_dir / 'checkpoints'} holds no complete checkpoint-N; "
                "run without --resume to start"
            )
        return found
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"--resume {path}: no such checkpoint folder")
    if checkpoint_step(path) is None:
        nested = find_checkpoint(path)
        if nested is None:
            raise ModelLoadError(
                f"--resume {path}: not a trainer checkpoint (no trainer_state.json, no "
                "checkpoint-N inside); to start from an adapter, pass it as the init adapter"
            )
        path = nested
    return path


@dataclass(frozen=True)
class StageStart:
    checkpoint: str | None  # what trainer.train(resume_from_checkpoint=...) gets
    moved_aside: Path | None  # where the old state went (fresh start), if anywhere
    redone_lines: int  # log lines after the checkpoint, moved to log.redone.jsonl
    message: str  # one line for the user


def choose_checkpoint(
    phase_dir: str | Path, resume: str | Path | bool | None = None, fresh: bool | str = False
) -> Path | None:
    """The checkpoint a phase will resume from (None: a fresh start), checking the arguments;
    changes nothing on disk, so it can run before the model loads. resume: None (default: the
    newest checkpoint if any), "latest" or True (one must exist), a checkpoint path, or False."""
    if fresh not in FRESH_CHOICES:
        raise ConfigError(f"fresh={fresh!r}: use True (move old state aside) or 'delete'")
    if fresh and resume not in (None, False):
        raise ConfigError("--resume and --fresh cannot be used together")
    if fresh or resume is False:
        return None
    phase_dir = Path(phase_dir)
    if resume:
        return resolve_checkpoint("latest" if resume is True else resume, phase_dir)
    return find_checkpoint(phase_dir)


def prepare_phase(
    phase_dir: str | Path, resume: str | Path | bool | None = None, fresh: bool | str = False
) -> StageStart:
    """Decide where the phase starts (choose_checkpoint) and make its folder ready: trim the logs
    when resuming, else move old state aside (deleted only when fresh="delete")."""
    phase_dir = Path(phase_dir)
    checkpoint = choose_checkpoint(phase_dir, resume, fresh)
    phase_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        step = checkpoint_step(checkpoint) or 0
        redone = _trim_step_logs(phase_dir, step)
        how = "as asked" if resume else "by default; pass --fresh to start over"
        message = f"resuming {phase_dir.name} from {checkpoint} (step {step}, {how})"
        print(message, file=sys.stderr, flush=True)
        return StageStart(str(checkpoint), None, redone, message)
    old = [phase_dir / n for n in ("checkpoints", *STATE_FILES) if (phase_dir / n).exists()]
    moved = None
    if not old:
        message = f"starting {phase_dir.name}"
    elif fresh == "delete":
        for path in old:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        message = f"starting {phase_dir.name} fresh; its old checkpoints and logs were deleted"
    else:
        moved = _move_aside(phase_dir, old)
        message = f"starting {phase_dir.name} fresh; its old checkpoints and logs are in {moved}"
    print(message, file=sys.stderr, flush=True)
    return StageStart(None, moved, 0, message)


def _move_aside(phase_dir: Path, old: list[Path]) -> Path:
    base = time.strftime("checkpoints.old-%Y%m%d-%H%M%S")
    aside, n = phase_dir / base, 1
    while aside.exists():
        aside, n = phase_dir / f"{base}-{n}", n + 1
    aside.mkdir()
    for path in old:
        path.rename(aside / path.name)
    return aside


def _trim_step_logs(phase_dir: Path, step: int) -> int:
    """Move log lines of steps after `step` (they will be trained again) to *.redone.jsonl."""
    moved = 0
    for name in _STEP_LOGS:
        path = phase_dir / name
        if not path.is_file():
            continue
        keep, redo = [], []
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                (keep if 0 <= _line_step(line) <= step else redo).append(line)
        if not redo:
            continue
        redone = path.with_name(path.stem + ".redone.jsonl")
        with redone.open("a", encoding="utf-8") as fh:
            fh.writelines(line if line.endswith("\n") else line + "\n" for line in redo)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        tmp.replace(path)
        moved += len(redo)
    return moved


def _line_step(line: str) -> int:
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return -1  # a line torn by a kill: moved out, so the next append cannot join it
    return step if isinstance(step, int) else -1


def rerun_command(argv: list[str]) -> str:
    """The command line to resume an interrupted `haiku-kit` run: the same command (it resumes
    the newest checkpoint by default) with any --fresh or --resume dropped."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--fresh" or arg.startswith(("--fresh=", "--resume=")):
            if arg == "--fresh" and i + 1 < len(argv) and argv[i + 1] in ("aside", "delete"):
                skip = True
            continue
        if arg == "--resume":
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("-")
            continue
        out.append(arg)
    return shlex.join(["haiku-kit", *out])
