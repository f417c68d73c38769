"""Parent/child trees of processes, per guest (rooted at its init) and for the host.

Works on anything with ``pid`` and ``ppid`` (scanner ``Proc`` or ``ProcRow``).
A process whose parent is not in the same set (a guest's init, whose parent is
the supervisor on the host; or the host's PID 1 and kthreadd) is a root.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Protocol, TypeVar


class HasParent(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def ppid(self) -> int: ...


P = TypeVar("P", bound=HasParent)
_PID = attrgetter("pid")


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
    can show for an instant while processes are reparented). One pass to
    link children to parents (in PID order, so no per-parent sort), one walk.
    """
    ordered = sorted(procs, key=_PID)  # linear when already in PID order
    present = {p.pid for p in ordered}
    kids: dict[int, list[P]] = {}
    found: list[P] = []
    for p in ordered:
        ppid = p.ppid
        if ppid not in present or (flat_init and ppid == 1):
            found.append(p)
        else:
            group = kids.get(ppid)
            if group is None:
                kids[ppid] = [p]
            else:
                group.append(p)
    first = prefer_root if prefer_root is not None else (2 if flat_init else None)
    if first is not None:  # that root first, the rest stay in PID order
        at = next((i for i, p in enumerate(found) if p.pid == first), 0)
        if at:
            found.insert(0, found.pop(at))
    if not found and ordered:
        found = ordered[:1]
    seen: set[int] = set()
    for root in found:
        stack: list[tuple[int, P]] = [(0, root)]
        while stack:
            depth, proc = stack.pop()
            pid = proc.pid
            if pid in seen:
                continue
            seen.add(pid)
            yield depth, proc
            children = kids.get(pid)
            if children:
                below = depth + 1
                stack.extend([(below, child) for child in reversed(children)])
    if len(seen) < len(present):
        for proc in ordered:  # anything left in a cycle
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
