"""docs/engine-api.md's pinned signatures are the code's (names, order, kinds, defaults)."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import signal
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine-api.md"
PINNED = DOC.read_text().split("## Pinned signatures", 1)[1]
LINES = re.findall(r"^    (engine\.[\w.]+)\((.*)\)$", PINNED, re.M)


def resolve(dotted: str) -> object:
    """The object itself: an attribute before a submodule of the same name
    (engine.runtime.console is a function, engine/runtime/console.py a module)."""
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
