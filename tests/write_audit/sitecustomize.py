"""The file-write audit of the multi-process training test (tests/train/test_multiprocess.py).

Python imports `sitecustomize` at start-up from the path; the test puts this folder first on
the PYTHONPATH of the processes it launches. With HAIKU_KIT_AUDIT_ROOT (the run folder) and
HAIKU_KIT_AUDIT_LOG (a folder outside it) set, every process records each write under the run
folder it makes, with its rank, to HAIKU_KIT_AUDIT_LOG/<pid>.jsonl: Python's audit events (open
for writing, rename, replace, remove, mkdir, shutil's copy/move/rmtree) and the three writers that
bypass Python's open (torch.save, safetensors' save_file, a Rust tokenizer's save), wrapped here.
Without the variables it does nothing.
"""

import json
import os
import sys

_ROOT = os.environ.get("HAIKU_KIT_AUDIT_ROOT")
_LOG = os.environ.get("HAIKU_KIT_AUDIT_LOG")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {  # event -> the indices of its arguments that are paths written or removed
    "os.rename": (0, 1), "os.replace": (0, 1), "os.remove": (0,), "os.rmdir": (0,),
    "os.mkdir": (0,), "os.truncate": (0,), "os.link": (1,), "os.symlink": (1,),
    "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1), "shutil.rmtree": (0,),
    "haiku_kit.write": (0,),
}


def _install():
    root = os.path.realpath(_ROOT)
    log_path = os.path.join(_LOG, f"{os.getpid()}.jsonl")
    rank = os.environ.get("RANK", "-")
    busy = []

    def under_root(path):
        if isinstance(path, int) or path is None:
            return None
        path = os.fsdecode(path)
        full = os.path.realpath(path)
        return full if full == root or full.startswith(root + os.sep) else None

    def record(event, path):
        busy.append(1)
        try:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"rank": rank, "pid": os.getpid(), "event": event,
                                     "path": os.path.relpath(path, root)}) + "\n")
        finally:
            busy.pop()

    def hook(event, args):
        if busy:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            full = under_root(path) if writes else None
            if full:
                record("open", full)
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                full = under_root(args[i]) if i < len(args) else None
                if full:
                    record(event, full)

    sys.addaudithook(hook)
    _wrap_native_writers()


def _wrap_native_writers():
    """torch.save, safetensors and tokenizers write from C++/Rust: no audit event of their own."""
    import functools

    def audited(fn, path_of):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            path = path_of(args, kwargs)
            if isinstance(path, (str, bytes, os.PathLike)):
                sys.audit("haiku_kit.write", os.fspath(path))
            return fn(*args, **kwargs)
        return call

    import safetensors.torch
    import tokenizers
    import torch

    torch.save = audited(torch.save, lambda a, k: a[1] if len(a) > 1 else k.get("f"))
    safetensors.torch.save_file = audited(safetensors.torch.save_file,
                                          lambda a, k: a[1] if len(a) > 1 else k.get("filename"))
    tokenizers.Tokenizer.save = audited(tokenizers.Tokenizer.save,
                                        lambda a, k: a[1] if len(a) > 1 else k.get("path"))


if _ROOT and _LOG:
    _install()
