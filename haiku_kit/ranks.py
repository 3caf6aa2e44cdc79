"""Which process of a multi-process launch this is, and the one rule for the run folder under
`torchrun` / `accelerate launch`: the main process writes, evaluates, reports and moves old state;
the other processes wait for it and use what it decided.

A launcher starts one copy of the command per process and tells each its place through the
environment (RANK, LOCAL_RANK, WORLD_SIZE: torchrun and accelerate's launchers; the OMPI_/PMI_
variables under mpirun). One process, the plain case, reads none of them and does nothing
special: every function here is then a plain call.

The process group is started by `start` (accelerate's PartialState, which TRL's trainers then
find and reuse): gloo on a CPU, NCCL on GPUs. Its timeout is long because the others wait for the
main process's own work (building the data splits, an evaluation), not only for each other.

This module imports nothing from the kit but its errors: every other module may use it.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from haiku_kit.errors import HaikuKitError

T = TypeVar("T")

# How long a process waits for the others at a barrier: the main process may be building the
# splits or evaluating meanwhile (torch's default of 30 minutes is shorter than a big eval).
WAIT = timedelta(hours=6)

_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK")


class MainProcessFailed(HaikuKitError):
    """The main process failed in work the others were waiting for; its error is in its log."""


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                raise HaikuKitError(f"{name}={value!r}: the launcher's process variable is not a whole number") from None
    return default


def processes() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    return max(1, _env_int(_SIZE_VARS, 1))


def rank() -> int:
    """This process's place among all processes (0: the main one)."""
    return _env_int(_RANK_VARS, 0)


def local_rank() -> int:
    """This process's place on its machine: the GPU it trains on."""
    return _env_int(_LOCAL_VARS, 0)


def launched() -> bool:
    """True under a launcher that started more than one process."""
    return processes() > 1


def is_main() -> bool:
    return rank() == 0


def _dist():
    """torch.distributed with the process group up (started here when an entry point has not
    started it yet: on the GPUs when there are some), or None in one process."""
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        start(cpu=not torch.cuda.is_available())
    return dist


def start(cpu: bool) -> None:
    """Start the process group of a multi-process launch (nothing in one process, or when it is
    up already). `cpu`: train on the CPU (gloo); accelerate picks the GPU of this LOCAL_RANK
    otherwise. TRL's trainers find this group and use it."""
    if not launched():
        return
    import torch.distributed as dist
    from accelerate import PartialState

    atexit.unregister(_stop)  # once, whoever started the group
    atexit.register(_stop)
    if dist.is_available() and dist.is_initialized():
        return

    # cpu=True is what makes accelerate start gloo on a CPU: without it, a torchrun launch on a
    # machine with no GPU is taken for one process (DistributedType.NO).
    PartialState(cpu=cpu, timeout=WAIT)


def _stop() -> None:
    """Close the process group at exit, while the interpreter is whole. Left to interpreter
    shutdown, gloo's worker threads can release tensors after Python is gone and abort the
    process (SIGABRT after a finished run; seen once in CI on notebook 03, and described in
    pytorch/pytorch PR 179291). No collective call here: a process that exits on an error must
    not wait for the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (nothing in one process)."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def gather(obj: Any) -> list[Any]:
    """Every process's `obj` (picklable), in rank order; [obj] in one process."""
    dist = _dist()
    if dist is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) on the main process only, the others waiting; every process returns
    the main process's result (picklable). When the main process's call raises, it raises there
    and the others raise MainProcessFailed, so no process is left waiting."""
    dist = _dist()
    if dist is None:
        return fn(*args, **kwargs)
    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box[0] = ("ok", fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - re-raised below, after the others are told
            error = err
            box[0] = ("error", f"{type(err).__name__}: {err}")
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    status, value = box[0]
    if status == "error":
        raise MainProcessFailed(f"the main process failed ({value}); see its output")
    return value


def main_only(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """fn(*args, **kwargs) on the main process only, the others waiting; returns nothing (for
    calls whose result is not picklable or not needed, e.g. saving an adapter)."""
    on_main(lambda: (fn(*args, **kwargs), None)[1])


def describe() -> str:
    """"process 1 of 2" or "one process", for logs and errors."""
    return f"process {rank()} of {processes()}" if launched() else "one process"
