"""Read Unsloth's real source without importing it (it needs a GPU): fetch the pinned wheels
with pip (no dependencies) and answer questions about their code from `ast` alone.

Used by test_unsloth_contract.py. A `SourceTree` is a {path in wheel: source text} mapping, so a
test can hand it a doctored copy of one file.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# pip's wording when it could not reach the index at all (as opposed to a missing version).
UNREACHABLE_MARKERS = (
    "NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
    "Name or service not known", "Network is unreachable", "ConnectTimeoutError", "ReadTimeoutError",
    "Connection refused", "ProxyError", "Could not fetch URL",
)


class RegistryUnreachable(RuntimeError):
    pass


def pinned_version(package: str, extra: str = "gpu") -> str:
    """The exact version pyproject.toml's extra pins `package` to."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for req in project["optional-dependencies"][extra]:
        match = re.fullmatch(rf"\s*{re.escape(package)}\s*==\s*([\w.]+)\s*", req)
        if match:
            return match.group(1)
    raise LookupError(f"pyproject.toml's [{extra}] extra does not pin {package} with ==")


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """The wheel of package==version in dest, downloaded (no dependencies) when not there yet."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "_", package)
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
         "--dest", str(dest), f"{package}=={version}"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    output = proc.stdout + proc.stderr
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if proc.returncode == 0 and found:
        return found[0]
    if any(marker in output for marker in UNREACHABLE_MARKERS):
        raise RegistryUnreachable(f"cannot reach the package index to fetch {package}=={version}")
    raise RuntimeError(f"pip could not download {package}=={version}:\n{output[-2000:]}")


@dataclass(frozen=True)
class Signature:
    where: str  # "path:function" of the definition that takes the keywords
    params: tuple[str, ...]  # every named parameter, positional ones first
    positional: tuple[str, ...]  # the ones a positional argument can fill
    var_keyword: bool

    def missing(self, keywords) -> list[str]:
        """Keywords this function does not name (a **kwargs catch-all does not count: it would
        swallow a renamed argument silently)."""
        return sorted(set(keywords) - set(self.params))


class SourceTree:
    """The Python files of a wheel (or a doctored copy), parsed on demand."""

    def __init__(self, files: Mapping[str, str], parsed: Mapping[str, ast.Module] | None = None):
        self.files = dict(files)
        self._parsed: dict[str, ast.Module] = dict(parsed or {})

    def _with(self, path: str, source: str) -> SourceTree:
        """A copy with one file changed; the other files' parse trees are shared."""
        return SourceTree({**self.files, path: source}, {k: v for k, v in self._parsed.items() if k != path})

    @classmethod
    def from_wheels(cls, *wheels: Path) -> SourceTree:
        files = {}
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if name.endswith(".py"):
                        files[name] = archive.read(name).decode("utf-8", errors="replace")
        return cls(files)

    def replaced(self, path: str, old: str, new: str) -> SourceTree:
        """A copy with `old` replaced by `new` in one file (the doctored-source tests)."""
        if old not in self.files[path]:
            raise ValueError(f"{old!r} is not in {path}")
        return self._with(path, self.files[path].replace(old, new))

    def module(self, path: str) -> ast.Module:
        if path not in self._parsed:
            self._parsed[path] = ast.parse(self.files[path], filename=path)
        return self._parsed[path]

    def paths(self, package: str) -> Iterator[str]:
        return (p for p in sorted(self.files) if p.startswith(package + "/"))

    def classes(self, name: str, package: str) -> Iterator[tuple[str, ast.ClassDef]]:
        for path in self.paths(package):
            if f"class {name}" not in self.files[path]:
                continue
            for node in self.module(path).body:
                if isinstance(node, ast.ClassDef) and node.name == name:
                    yield path, node

    def functions(self, name: str, package: str) -> Iterator[tuple[str, ast.FunctionDef]]:
        for path in self.paths(package):
            if f"def {name}" not in self.files[path]:
                continue
            for node in self.module(path).body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    yield path, node

    def method_signature(self, class_name: str, method: str, package: str = "unsloth", _depth: int = 0) -> Signature:
        """The signature that really takes the keywords of class_name.method: a method that only
        forwards (*args, **kwargs) to Other.method is followed to Other, and inherited methods
        to the base class."""
        if _depth > 8:
            raise LookupError(f"{class_name}.{method}: delegation too deep")
        for path, cls in self.classes(class_name, package):
            for node in cls.body:
                if isinstance(node, ast.FunctionDef) and node.name == method:
                    sig = signature_of(node, f"{path}:{class_name}.{method}")
                    target = forwarded_to(node, method) if len(sig.params) <= 1 else None
                    if target is None:
                        return sig
                    return self.method_signature(target, method, package, _depth + 1)
            for base in cls.bases:
                if isinstance(base, ast.Name):
                    try:
                        return self.method_signature(base.id, method, package, _depth + 1)
                    except LookupError:
                        continue
        raise LookupError(f"no class {class_name} with a method {method} in {package}")

    def bound_method_signatures(self, attribute: str, module: str = "unsloth/save.py") -> list[Signature]:
        """Unsloth attaches its save methods to a loaded language model in save.py
        (`model.save_pretrained_merged = _bind_saving_method(unsloth_generic_save_pretrained_merged,
        model, ...)`): the signature of every function defined there and so attached to
        `attribute`, without its `self`."""
        tree = self.module(module)
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == attribute for t in node.targets
            ):
                names |= {n.id for n in _names_in(node.value)}
        signatures = [
            Signature(f"{module}:{f.name}", sig.params[1:], sig.positional[1:], sig.var_keyword)
            for f in tree.body
            if isinstance(f, ast.FunctionDef) and f.name in names
            for sig in [signature_of(f, "")]
        ]
        if not signatures:
            raise LookupError(f"no function of {module} is attached to .{attribute}")
        return signatures

    def rename_parameter(self, class_or_function: str, method: str | None, old: str, new: str,
                         package: str = "unsloth") -> SourceTree:
        """A copy in which one parameter of class.method (or of a module-level function when
        method is None) is renamed at its definition, as an Unsloth release might."""
        if method is None:
            found = [(path, f) for path, f in self.functions(class_or_function, package)]
        else:
            found = [(path, n) for path, cls in self.classes(class_or_function, package) for n in cls.body
                     if isinstance(n, ast.FunctionDef) and n.name == method]
        for path, func in found:
            a = func.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs:
                if arg.arg == old:
                    lines = self.files[path].splitlines(keepends=True)
                    line = lines[arg.lineno - 1]
                    start = arg.col_offset
                    assert line[start:start + len(old)] == old
                    lines[arg.lineno - 1] = line[:start] + new + line[start + len(old):]
                    return self._with(path, "".join(lines))
        raise LookupError(f"no parameter {old} in {class_or_function}.{method}")

    def literal(self, path: str, name: str):
        """The value of a module-level `name = <literal>` in path."""
        for node in self.module(path).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return ast.literal_eval(node.value)
        raise LookupError(f"{path} has no module-level literal {name}")


def signature_of(func: ast.FunctionDef, where: str) -> Signature:
    a = func.args
    positional = tuple(arg.arg for arg in a.posonlyargs + a.args)
    return Signature(where, positional + tuple(arg.arg for arg in a.kwonlyargs), positional, a.kwarg is not None)


def forwarded_to(func: ast.FunctionDef, method: str) -> str | None:
    """Other when the function's last statement returns Other.method(..., **kwargs)."""
    for node in reversed(func.body):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            call = node.value
            if (isinstance(call.func, ast.Attribute) and call.func.attr == method
                    and isinstance(call.func.value, ast.Name)
                    and any(k.arg is None for k in call.keywords)):
                return call.func.value.id
            return None
    return None


def _names_in(node: ast.AST) -> Iterator[ast.Name]:
    if isinstance(node, ast.Call):
        for arg in node.args:
            if isinstance(arg, ast.Name):
                yield arg
    elif isinstance(node, ast.Name):
        yield node
