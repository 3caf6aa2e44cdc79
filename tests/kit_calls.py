"""The keywords haiku_kit's own source passes at its call sites, read with `ast`.

A call like `GRPOConfig(**_common_args(...), num_generations=...)` is followed into the function
that builds the splatted mapping (dict literals, `dict(...)`, `name[key] = ...` and nested `**`),
so fields set only on the GPU path are found too. `trainer_config(SFTConfig, MAPPING, ...)` and
`config_args(SFTConfig, cfg, s, out, device, model, MAPPING, phase)`, the kit's ways of building a
TRL config's arguments, count as a call of SFTConfig with MAPPING's keys (plus common_args').
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KIT = Path(__file__).resolve().parents[1] / "haiku_kit"


@dataclass(frozen=True)
class CallSite:
    where: str  # "haiku_kit/x.py:LINE"
    keywords: frozenset[str]
    positional: int
    splats: tuple[str, ...]  # names of functions whose result is passed as **, unresolved


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(KIT.parent)): ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
            for p in sorted(KIT.rglob("*.py"))}


def _functions(modules: dict[str, ast.Module]) -> dict[str, ast.FunctionDef]:
    return {n.name: n for tree in modules.values() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _keys_of_expr(expr: ast.AST, scope: ast.FunctionDef | None, funcs, seen) -> set[str]:
    """The string keys a mapping expression can hold."""
    keys: set[str] = set()
    if isinstance(expr, ast.Dict):
        for k, v in zip(expr.keys, expr.values, strict=True):
            if k is None:
                keys |= _keys_of_expr(v, scope, funcs, seen)
            elif isinstance(k, ast.Constant) and isinstance(k.value, str):
                keys.add(k.value)
    elif isinstance(expr, ast.Call) and _callee(expr) == "dict":
        for kw in expr.keywords:
            keys |= {kw.arg} if kw.arg else _keys_of_expr(kw.value, scope, funcs, seen)
    elif isinstance(expr, ast.Call) and _callee(expr) in funcs:
        keys |= _keys_returned(funcs[_callee(expr)], funcs, seen)
    elif isinstance(expr, ast.Name) and scope is not None:
        keys |= _keys_of_name(expr.id, scope, funcs, seen)
    return keys


def _keys_of_name(name: str, scope: ast.FunctionDef, funcs, seen) -> set[str]:
    keys: set[str] = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    keys |= _keys_of_expr(node.value, scope, funcs, seen)
                elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                      and target.value.id == name and isinstance(target.slice, ast.Constant)):
                    keys.add(target.slice.value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == name):
            keys |= {kw.arg for kw in node.keywords if kw.arg}
            for arg in node.args:
                keys |= _keys_of_expr(arg, scope, funcs, seen)
    return keys


def _keys_returned(func: ast.FunctionDef, funcs, seen) -> set[str]:
    if func.name in seen:
        return set()
    seen = seen | {func.name}
    keys: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Return) and node.value is not None:
            keys |= _keys_of_expr(node.value, func, funcs, seen)
    return keys


def _enclosing(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | None, ast.Call]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call):
                    yield node, inner


def call_sites(callee: str, receiver: str | None = None) -> list[CallSite]:
    """Every call of `callee` (a function name, or a method name on `receiver` when given) in
    haiku_kit, with the keywords it passes, splatted mappings resolved."""
    modules = _modules()
    funcs = _functions(modules)
    sites: dict[str, CallSite] = {}
    for path, tree in modules.items():
        for scope, call in _enclosing(tree):
            if (_callee(call) == "trainer_config" and len(call.args) >= 2  # TRL config + pass-through
                    and isinstance(call.args[0], ast.Name) and call.args[0].id == callee):
                where = f"{path}:{call.lineno}"
                keywords = _keys_of_expr(call.args[1], scope, funcs, frozenset())
                sites[where] = CallSite(where, frozenset(keywords), 0, ())
                continue
            if (_callee(call) == "config_args" and len(call.args) >= 7  # the kit's TRL config args
                    and isinstance(call.args[0], ast.Name) and call.args[0].id == callee):
                # settings fields pass by name only where the TRL config has them (checked at run
                # time, tests/train/test_trl_fields.py); what is read here is what the kit adds:
                # common_args' keys and the phase's own mapping
                where = f"{path}:{call.lineno}"
                keywords = (_keys_returned(funcs["common_args"], funcs, frozenset())
                            | _keys_of_expr(call.args[6], scope, funcs, frozenset()))
                sites[where] = CallSite(where, frozenset(keywords), 0, ())
                continue
            if _callee(call) != callee:
                continue
            if (not call.args and len(call.keywords) == 1 and call.keywords[0].arg is None
                    and ast.unparse(call.keywords[0].value) == "self.args"):
                continue  # `SFTConfig(**self.args)`: the mapping config_args built, read above
            if receiver is not None and not (isinstance(call.func, ast.Attribute)
                                             and isinstance(call.func.value, ast.Name)
                                             and call.func.value.id == receiver):
                continue
            keywords, splats = set(), []
            for kw in call.keywords:
                if kw.arg:
                    keywords.add(kw.arg)
                    continue
                found = _keys_of_expr(kw.value, scope, funcs, frozenset())
                keywords |= found
                if not found:
                    splats.append(ast.unparse(kw.value))
            where = f"{path}:{call.lineno}"
            sites[where] = CallSite(where, frozenset(keywords), len(call.args), tuple(splats))
    return list(sites.values())

