"""Parent/child trees of processes, per guest (rooted at its init) and for the host.

Works on anything with ``pid`` and ``ppid`` (scanner ``Proc`` or ``ProcRow``).
A process whose parent is not in the same set (a guest's init, whose parent is
the supervisor on the host; or the host's PID 1 and kthreadd) is a root.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, TypeVar


class HasParent(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def ppid(self) -> int: ...


P = TypeVar("P", bound=HasParent)


def children_map(procs: Iterable[P]) -> dict[int, list[P]]:
    """ppid -> children sorted by pid."""
    kids: dict[int, list[P]] = {}
    for p in procs:
        kids.setdefault(p.ppid, []).append(p)
    for group in kids.values():
        group.sort(key=lambda p: p.pid)
    return kids


def roots(procs: Sequence[P], prefer: int | None = None, flat_init: bool = False) -> list[P]:
    """Processes whose parent is not in ``procs``; ``prefer`` (an init pid) first.

    ``flat_init``: as ``ps f``, children of the host's PID 1 are roots too,
    and kthreadd's tree (PID 2) comes first.
    """
    pids = {p.pid for p in procs}
    found = sorted(
        (p for p in procs if p.ppid not in pids or (flat_init and p.ppid == 1)),
        key=lambda p: p.pid,
    )
    if prefer is not None:
        found.sort(key=lambda p: p.pid != prefer)
    elif flat_init:
        found.sort(key=lambda p: p.pid != 2)
    return found


def walk(
    procs: Sequence[P], prefer_root: int | None = None, flat_init: bool = False
) -> Iterator[tuple[int, P]]:
    """(depth, process) in tree order: each parent before its children.

    Every process is yielded exactly once, even with a ppid loop (which /proc
    can show for an instant while processes are reparented).
    """
    kids = children_map(procs)
    if flat_init:
        kids.pop(1, None)
    seen: set[int] = set()
    for root in roots(procs, prefer_root, flat_init) or sorted(procs, key=lambda p: p.pid)[:1]:
        stack: list[tuple[int, P]] = [(0, root)]
        while stack:
            depth, proc = stack.pop()
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            yield depth, proc
            for child in reversed(kids.get(proc.pid, ())):
                if child.pid not in seen:
                    stack.append((depth + 1, child))
    for proc in sorted(procs, key=lambda p: p.pid):  # anything left in a cycle
        if proc.pid not in seen:
            seen.add(proc.pid)
            yield 0, proc


def descendants(procs: Iterable[P], pid: int) -> list[P]:
    """Every process below ``pid`` (not including it)."""
    kids = children_map(procs)
    out: list[P] = []
    stack = list(kids.get(pid, ()))
    seen = {pid}
    while stack:
        p = stack.pop()
        if p.pid in seen:
            continue
        seen.add(p.pid)
        out.append(p)
        stack.extend(kids.get(p.pid, ()))
    return out


def forest_prefix(depth: int) -> str:
    """ps f style indentation of the COMMAND column."""
    return "" if depth == 0 else " " + "    " * (depth - 1) + "\\_ "
