"""docs/engine-api.md's pinned signatures are the code's (names, order, kinds, defaults)."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import signal
from pathlib import Path

import pytest

import engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine-api.md"
PINNED = DOC.read_text().split("## Pinned signatures", 1)[1]
LINES = re.findall(r"^    (engine\.[\w.]+)\((.*)\)$", PINNED, re.M)


def resolve(dotted: str) -> object:
    """The object itself: an attribute before a submodule of the same name."""
    parts = dotted.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 2):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[:i]))
        obj = getattr(obj, part)
    return obj


def documented(params: str) -> list[tuple[str, object, object]]:
    """(name, kind, default) of a documented parameter list."""
    args = ast.parse(f"def f({params}): pass").body[0].args  # type: ignore[attr-defined]
    env = {"os": os, "signal": signal}
    out: list[tuple[str, object, object]] = []
    plain = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(plain) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(plain, defaults, strict=True):
        value = inspect.Parameter.empty if default is None else eval(ast.unparse(default), env)
        out.append((arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, value))
    if args.vararg:
        out.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        value = inspect.Parameter.empty if default is None else eval(ast.unparse(default), env)
        out.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, value))
    return out


def test_the_page_pins_signatures() -> None:
    assert len(LINES) >= 60


@pytest.mark.parametrize(("dotted", "params"), LINES, ids=[d for d, _ in LINES])
def test_a_documented_signature_is_the_codes(dotted: str, params: str) -> None:
    actual = inspect.signature(resolve(dotted)).parameters.values()
    found = [(p.name, p.kind, p.default) for p in actual if p.name != "self"]
    assert found == documented(params), f"{dotted}: the code says {found}"


def test_no_public_call_is_shadowed_by_a_submodule_of_its_name() -> None:
    """Importing engine/runtime/console.py replaced the package's console() by the
    module: the second console() in one process raised 'module is not callable'."""
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if not info.ispkg:
            continue
        package = importlib.import_module(info.name)
        public = {
            n: getattr(package, n) for n in getattr(package, "__all__", ()) if hasattr(package, n)
        }
        for sub in pkgutil.iter_modules(package.__path__, f"{info.name}."):
            importlib.import_module(sub.name)
        changed = [n for n, obj in public.items() if getattr(package, n) is not obj]
        assert not changed, f"{info.name}: {changed} shadowed by a submodule"
