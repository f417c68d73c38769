"""Which processes to show, in which order: filter, sort, tree. No Textual.

``ProcIndex`` holds one snapshot's processes prepared so that a key press
costs little on the UI thread: each row's key is made once, orderings are
computed once per sort column (the poll worker computes the one on screen
before it hands the snapshot over), an inverted sort is a reversed list,
and a filter that narrows the previous one searches only its matches.
Keys are ``ProcRow.key`` = (pid, starttime), so a reused PID is a new row.
Equal values are ordered by PID (a stable sort over the PID order), so rows
and tree siblings do not jump between snapshots (htop#382).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import Any

from engine.datamodel import HOST_NAME, ProcRow

# Values a column sorts by, computed for all rows at once (ties: PID order).
SORT_VALUES: dict[str, Callable[[Sequence[ProcRow]], list[Any]]] = {
    "pid": lambda rows: list(map(attrgetter("pid"), rows)),
    "guest": lambda rows: list(map(attrgetter("guest"), rows)),
    "nspid": lambda rows: list(map(attrgetter("nspid"), rows)),
    "user": lambda rows: list(map(attrgetter("user"), rows)),
    "state": lambda rows: list(map(attrgetter("state"), rows)),
    "cpu": lambda rows: list(map(attrgetter("cpu_percent"), rows)),
    "rss": lambda rows: list(map(attrgetter("rss"), rows)),
    "threads": lambda rows: list(map(attrgetter("threads"), rows)),
    "time": lambda rows: [p.utime + p.stime for p in rows],
    "command": lambda rows: list(map(attrgetter("cmdline"), rows)),
}
SORT_FIELDS = tuple(SORT_VALUES)
REGEX_CHARS = frozenset(".^$*+?{}[]\\|()")
CACHED_VIEWS = 8


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """What the user asked to see."""

    text: str = ""  # filter: substring, or a regex; "!" prefix inverts
    guest: str | None = None  # only this guest (HOST_NAME for the host)
    sort: str = "cpu"
    reverse: bool = True
    tree: bool = False
    kernel: bool = True  # show kernel threads (htop hides them by default: K)


@dataclass(frozen=True, slots=True)
class View:
    order: list[tuple[int, int]]
    prefixes: dict[tuple[int, int], str]


def matcher(text: str) -> Callable[[str], bool]:
    """A case-insensitive match for the filter box (k9s: ``/re``, ``/!re``)."""
    invert = text.startswith("!")
    pattern = text[1:] if invert else text
    if not pattern:
        return lambda _s: True
    try:
        search = re.compile(pattern, re.IGNORECASE).search
    except re.error:
        lowered = pattern.lower()
        search = lambda s: lowered in s.lower()  # noqa: E731
    if invert:
        return lambda s: not search(s)
    return lambda s: bool(search(s))


def _plain(text: str) -> bool:
    """A filter that is a plain substring (so a longer one only narrows it)."""
    return bool(text) and not text.startswith("!") and REGEX_CHARS.isdisjoint(text)


class ProcIndex:
    """One snapshot's processes, prepared for cheap sorting and filtering.

    Not thread-safe: the poll worker builds and warms it, then hands it to
    the UI thread, which alone uses it from then on.
    """

    __slots__ = ("_hay", "_masks", "_matches", "_orders", "_views", "items", "keys", "rows")

    def __init__(self, rows: Iterable[ProcRow]) -> None:
        self.rows: tuple[ProcRow, ...] = tuple(rows)
        # p.key, without a property call per process (built every poll)
        self.keys: list[tuple[int, int]] = [(p.pid, p.starttime) for p in self.rows]
        self.items: dict[tuple[int, int], ProcRow] = dict(zip(self.keys, self.rows, strict=True))
        self._orders: dict[str, list[int]] = {}
        self._hay: list[str] | None = None
        self._matches: dict[tuple[str, str | None], list[int]] = {}
        self._masks: dict[tuple[str, str | None, bool], bytes] = {}
        self._views: dict[ViewSpec, View] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def ordering(self, column: str) -> list[int]:
        """Row positions in ascending order of ``column``, ties by PID."""
        column = column if column in SORT_VALUES else "pid"
        order = self._orders.get(column)
        if order is None:
            by_pid = self._orders.get("pid")
            if by_pid is None:
                pids = SORT_VALUES["pid"](self.rows)
                by_pid = self._orders["pid"] = sorted(range(len(pids)), key=pids.__getitem__)
            if column == "pid":
                return by_pid
            values = SORT_VALUES[column](self.rows)
            order = self._orders[column] = sorted(by_pid, key=values.__getitem__)
        return order

    def matches(self, text: str, guest: str | None, kernel: bool = True) -> list[int] | None:
        """Positions (ascending) of rows passing the filter; None: no filter."""
        if not text and guest is None and kernel:
            return None
        found = self._matches.get((text, guest, kernel))
        if found is not None:
            return found
        if text:
            found = self._text_matches(text, guest, kernel)
        else:
            rows = self.rows
            found = [
                i for i, p in enumerate(rows)
                if (guest is None or p.guest == guest) and (kernel or not p.kernel)
            ]  # fmt: skip
        if len(self._matches) >= 4 * CACHED_VIEWS:
            self._matches.clear()
            self._masks.clear()
        self._matches[(text, guest, kernel)] = found
        return found

    def _text_matches(self, text: str, guest: str | None, kernel: bool) -> list[int]:
        if self._hay is None:
            self._hay = [f"{p.pid} {p.guest} {p.user} {p.cmdline}".lower() for p in self.rows]
        hay = self._hay
        candidates = self._narrowest(text, guest, kernel)
        if _plain(text):
            needle = text.lower()
            if candidates is None:
                return [i for i, s in enumerate(hay) if needle in s]
            return [i for i in candidates if needle in hay[i]]
        match = matcher(text)
        pool = range(len(hay)) if candidates is None else candidates
        return [i for i in pool if match(hay[i])]

    def _narrowest(self, text: str, guest: str | None, kernel: bool) -> list[int] | None:
        """The smallest earlier result that must contain every match of ``text``."""
        best = self.matches("", guest, kernel)
        if not _plain(text):
            return best
        lowered = text.lower()
        for (old, *scope), found in self._matches.items():
            if scope == [guest, kernel] and _plain(old) and old.lower() in lowered:
                if best is None or len(found) < len(best):
                    best = found
        return best

    def view(self, spec: ViewSpec) -> View:
        """The display order (and tree prefixes) under ``spec``; cached."""
        cached = self._views.get(spec)
        if cached is not None:
            return cached
        asc = self.ordering(spec.sort)
        found = self.matches(spec.text, spec.guest, spec.kernel)
        if found is None or len(found) == len(asc):  # every row (no kernel thread to hide)
            seq = asc
        elif len(found) * 8 < len(asc):  # few matches: sort them by rank
            rank = self._rank(spec.sort)
            seq = sorted(found, key=rank.__getitem__)
        else:  # most rows (kernel threads hidden): asc without the others, at C speed
            mask = self._mask((spec.text, spec.guest, spec.kernel), found)
            seq = list(compress(asc, map(mask.__getitem__, asc)))
        if spec.reverse:
            seq = seq[::-1]
        if spec.tree:
            result = self._tree(seq)
        else:
            result = View(list(map(self.keys.__getitem__, seq)), {})
        if len(self._views) >= CACHED_VIEWS:
            self._views.clear()
        self._views[spec] = result
        return result

    def _mask(self, scope: tuple[str, str | None, bool], found: list[int]) -> bytes:
        """1 at each position in ``found`` (the matches of ``scope``), 0 elsewhere."""
        mask = self._masks.get(scope)
        if mask is None:
            keep = bytearray(len(self.rows))
            for i in found:
                keep[i] = 1
            mask = self._masks[scope] = bytes(keep)
        return mask

    def _rank(self, column: str) -> list[int]:
        key = "#rank:" + column
        rank = self._orders.get(key)
        if rank is None:
            rank = [0] * len(self.rows)
            for place, i in enumerate(self.ordering(column)):
                rank[i] = place
            self._orders[key] = rank
        return rank

    def _tree(self, seq: list[int]) -> View:
        """Parents before children; siblings keep their order in ``seq``."""
        rows = self.rows
        at_pid = {rows[i].pid: i for i in seq}
        children: dict[int, list[int]] = {}
        roots: list[int] = []
        for i in seq:
            p = rows[i]
            parent = at_pid.get(p.ppid)
            if parent is None or p.ppid == p.pid:
                roots.append(i)
            else:
                children.setdefault(parent, []).append(i)
        order: list[tuple[int, int]] = []
        prefixes: dict[tuple[int, int], str] = {}
        seen: set[int] = set()
        self._walk(roots, children, order, prefixes, seen)
        if len(seen) < len(seq):  # a parent loop: no root reaches it
            self._walk([i for i in seq if i not in seen], children, order, prefixes, seen)
        return View(order, prefixes)

    def _walk(
        self, roots: list[int], children: dict[int, list[int]],
        order: list[tuple[int, int]], prefixes: dict[tuple[int, int], str], seen: set[int],
    ) -> None:  # fmt: skip
        keys = self.keys
        # Iterative DFS: a deep fork chain must not hit the recursion limit.
        stack: list[tuple[int, str, bool, bool]] = [(r, "", True, True) for r in reversed(roots)]
        while stack:
            i, indent, last, is_root = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            key = keys[i]
            order.append(key)
            if not is_root:
                prefixes[key] = indent + ("└─ " if last else "├─ ")
            kids = children.get(i)
            if kids:
                below = "" if is_root else indent + ("   " if last else "│  ")
                end = len(kids) - 1
                stack.extend((kids[j], below, j == end, False) for j in range(end, -1, -1))


def build_view(rows: Sequence[ProcRow], spec: ViewSpec) -> View:
    """The display order (and tree prefixes) for ``rows`` under ``spec``."""
    return ProcIndex(rows).view(spec)


def guest_label(guest: str) -> str:
    """How a process's context reads in the GUEST column."""
    if guest.endswith("/"):  # a host of a console with several: HOST/
        return f"{guest}(host)"
    return "(host)" if guest == HOST_NAME else guest
