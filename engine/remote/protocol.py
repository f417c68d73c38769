"""The agent's wire format: JSON lines on stdin/stdout, versioned.

Every message is one JSON object on one line, ``t`` saying what it is.

Agent -> console::

    {"t":"hello","protocol":1,"vstui":"0.1.0","schema":{...},"host":{...}}
    {"t":"ok","id":7,"result":...}            a call's result
    {"t":"err","id":7,"error":{"type":"GuestNotFound","message":"...","guest":"web"}}
    {"t":"out","id":8,"fd":1,"data":"..."}    a stream's output (UTF-8 text as
                                              "data", anything else as "b64")
    {"t":"exit","id":8,"status":0}            a stream's end and exit status
    {"t":"snap","s":12,"w":1733.5,...}        a snapshot (a delta after the first)

Console -> agent: ``{"id":7,"op":"stop","name":"web"}``; ``stdin``/``eof``/
``cancel`` messages name a running stream with ``to``.

Snapshots are sent as deltas (``SnapshotEncoder``/``SnapshotDecoder``):
records travel as lists in the order of the schema the hello carries, so
the console decodes by field name and either side may have fields the
other lacks; after the first frame only changed fields of changed records
go out, and an idle host costs a few dozen bytes a second.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import typing
from collections.abc import Callable, Iterable
from typing import Any

from engine import errors
from engine.datamodel import Gauge, GuestStatus, NetStats, ProcRow, Snapshot
from engine.errors import ProtocolError, VstuiError
from engine.text import excerpt as text_excerpt
from engine.text import visible

PROTOCOL = 1
MAX_LINE = 16 << 20  # bytes; a longer line is garbage, not a message
RECORDS: dict[str, type] = {
    "GuestStatus": GuestStatus, "ProcRow": ProcRow, "Gauge": Gauge, "NetStats": NetStats,
}  # fmt: skip
# rounding that keeps noise off the wire (digits; 0 = whole numbers)
ROUND = {"cpu_percent": 1, "rx_rate": 0, "tx_rate": 0}


def encode(msg: dict[str, Any]) -> bytes:
    """One message as one line (ASCII: control characters and lone surrogates escaped)."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as a message; ProtocolError for anything else."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError(f"not a protocol message: {excerpt(line)}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"not a protocol message: {excerpt(line)}")
    return msg


def excerpt(data: bytes | str, size: int = 60) -> str:
    """A short, terminal-safe quote of what arrived."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return "'" + text_excerpt(text.strip(), size) + "'"


def pack(data: bytes) -> dict[str, str]:
    """Bytes for a message: as text when they are UTF-8 (command output), else
    base64 (an archive: escaping binary in JSON would triple it)."""
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def unpack(msg: dict[str, Any]) -> bytes:
    """The bytes ``pack`` put in a message."""
    try:
        if "b64" in msg:
            return base64.b64decode(msg["b64"], validate=True)
        return str(msg.get("data", "")).encode("utf-8", "surrogateescape")
    except (ValueError, TypeError):
        raise ProtocolError("bad data in a message") from None


# -- errors ---------------------------------------------------------------
def error_to_wire(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, VstuiError):
        return {"type": type(exc).__name__, "message": exc.message, "guest": exc.guest}
    return {"type": "VstuiError", "message": f"internal error: {type(exc).__name__}: {exc}"}


def error_from_wire(wire: Any, host: str) -> VstuiError:
    """The engine error the agent raised, as the same class here, marked with its host."""
    if not isinstance(wire, dict) or not isinstance(wire.get("message"), str):
        raise ProtocolError(f"malformed error: {excerpt(json.dumps(wire))}", host)
    cls = getattr(errors, str(wire.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, VstuiError)):
        cls = VstuiError
    exc = VstuiError.__new__(cls)
    guest = wire.get("guest")
    VstuiError.__init__(exc, wire["message"], guest if isinstance(guest, str) else None)
    exc.host = host
    return exc


# -- records --------------------------------------------------------------
def schema() -> dict[str, list[str]]:
    """Field names of every record, in wire order (sent in the hello)."""
    return {name: [f.name for f in dataclasses.fields(cls)] for name, cls in RECORDS.items()}


def to_wire(obj: Any) -> list[Any]:
    """A record as a list of its fields (nested records as lists too)."""
    return [_value(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]


def _value(name: str, value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_wire(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and name in ROUND:
        digits = ROUND[name]
        return round(value, digits) if digits else int(round(value))
    return value


class RecordReader:
    """Builds this side's records from lists in the agent's schema."""

    def __init__(self, remote: dict[str, list[str]]) -> None:
        self._builders: dict[type, Callable[[list[Any]], Any]] = {}
        for name in RECORDS:
            if not isinstance(remote.get(name), list):
                raise ProtocolError(f"the hello's schema has no {name}")
        for name, cls in RECORDS.items():
            self._builders[cls] = self._builder(cls, remote[name])

    def read(self, cls: type, wire: Any) -> Any:
        if not isinstance(wire, list):
            raise ProtocolError(f"a {cls.__name__} record is not a list")
        try:
            return self._builders[cls](wire)
        except (TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"bad {cls.__name__} record: {exc}") from None

    def _builder(self, cls: type, remote: list[str]) -> Callable[[list[Any]], Any]:
        hints = typing.get_type_hints(cls)
        steps: list[tuple[str, int | None, Any, Callable[[Any], Any]]] = []
        for f in dataclasses.fields(cls):
            index = remote.index(f.name) if f.name in remote else None
            if index is None and f.default is dataclasses.MISSING and f.init:
                if f.default_factory is dataclasses.MISSING:
                    raise ProtocolError(f"the agent's {cls.__name__} lacks '{f.name}'")
            if f.init:
                steps.append((f.name, index, f.default, self._converter(hints[f.name])))

        def build(wire: list[Any]) -> Any:
            kwargs = {}
            for name, index, _default, convert in steps:
                if index is not None:
                    kwargs[name] = convert(wire[index])
            return cls(**kwargs)

        return build

    def _converter(self, hint: Any) -> Callable[[Any], Any]:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nested = next((a for a in [hint, *args] if a in RECORDS.values()), None)
        if nested is not None:
            return lambda v: None if v is None else self.read(nested, v)
        if any(typing.get_origin(a) is tuple for a in (hint, *args)):  # also tuple | None
            return lambda v: tuple(map(_shown, v)) if isinstance(v, list) else v
        if float in (hint, *args):  # a rounded float travels as a whole number
            return lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
        return _shown


def _shown(value: Any) -> Any:
    """Text from another host's agent enters the console here: made visible
    like local text (engine.text), whatever that agent sent."""
    return visible(value) if isinstance(value, str) else value


# -- snapshots ------------------------------------------------------------
def _pairs(old: list[Any], new: list[Any]) -> list[Any]:
    """[i, value, i, value, ...] where ``new`` differs from ``old``."""
    out: list[Any] = []
    for i, value in enumerate(new):
        if i >= len(old) or old[i] != value:
            out += [i, value]
    return out


def _apply(old: list[Any], pairs: list[Any]) -> list[Any]:
    new = list(old)
    for i in range(0, len(pairs) - 1, 2):
        new[pairs[i]] = pairs[i + 1]
    return new


class SnapshotEncoder:
    """Turns successive snapshots into frames: the first full, then deltas."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start over: the next frame is full (after a new watch)."""
        self.seq = 0
        self._guests: dict[str, list[Any]] = {}
        self._order: list[str] = []
        self._procs: dict[tuple[int, int], list[Any]] = {}
        self._errors: list[str] = []
        self._ncpu = 0

    def frame(self, snap: Snapshot, procs: Iterable[ProcRow]) -> dict[str, Any]:
        self.seq += 1
        out: dict[str, Any] = {"t": "snap", "s": self.seq, "w": round(snap.wall, 3)}
        if self.seq == 1:
            out["full"] = 1
        if snap.ncpu != self._ncpu:
            out["n"] = self._ncpu = snap.ncpu
        if list(snap.errors) != self._errors:
            out["e"] = self._errors = list(snap.errors)
        rows = {g.name: self._guest(g, snap.wall) for g in snap.guests}
        self._diff(out, "g", self._guests, rows, lambda name: [name])
        order = list(rows)
        if order != self._order:
            out["go"] = self._order = order
        prows = {(p.pid, p.starttime): to_wire(p) for p in procs}
        self._diff(out, "p", self._procs, prows, list)
        return out

    @staticmethod
    def _guest(g: GuestStatus, wall: float) -> list[Any]:
        # uptime grows every second: send the start instead (see SnapshotDecoder)
        wire = to_wire(g)
        i = _UPTIME
        if wire[i] is not None:
            wire[i] = round(wall - wire[i])
        return wire

    @staticmethod
    def _diff(
        out: dict[str, Any],
        tag: str,
        known: dict[Any, list[Any]],
        now: dict[Any, list[Any]],
        key_words: Callable[[Any], list[Any]],
    ) -> None:
        new, changed = [], []
        for key, wire in now.items():
            old = known.get(key)
            if old is None:
                new.append(wire)
            elif old != wire:
                changed.append([*key_words(key), *_pairs(old, wire)])
        gone = [w for key in known if key not in now for w in key_words(key)]
        known.clear()
        known.update(now)
        for suffix, items in (("", new), ("d", changed), ("x", gone)):
            if items:
                out[tag + suffix] = items


_UPTIME = [f.name for f in dataclasses.fields(GuestStatus)].index("uptime")


class SnapshotDecoder:
    """Rebuilds immutable Snapshots from frames; unchanged records stay the same objects.

    Only a running guest's uptime moves every frame (it travels as the
    guest's start time), so only those records are renewed when nothing
    else changed.
    """

    def __init__(self, remote_schema: dict[str, list[str]]) -> None:
        self.reader = RecordReader(remote_schema)
        self._schema = remote_schema
        gfields, pfields = remote_schema["GuestStatus"], remote_schema["ProcRow"]
        self._name_at = gfields.index("name")
        self._uptime = gfields.index("uptime") if "uptime" in gfields else None
        self._pid_at, self._st_at = pfields.index("pid"), pfields.index("starttime")
        self._reset()

    def _reset(self) -> None:
        self.seq = 0
        self._guests: dict[str, tuple[list[Any], GuestStatus]] = {}
        self._order: list[str] = []
        self._procs: dict[tuple[int, int], tuple[list[Any], ProcRow]] = {}
        self._proc_rows: tuple[ProcRow, ...] = ()
        self._errors: tuple[str, ...] = ()
        self._ncpu = 1
        self.last: Snapshot | None = None

    def apply(self, frame: dict[str, Any], taken: float) -> Snapshot:
        """The snapshot after ``frame`` (received at monotonic time ``taken``)."""
        try:
            return self._apply(frame, taken)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProtocolError(f"bad snapshot frame: {type(exc).__name__}: {exc}") from None

    def _apply(self, frame: dict[str, Any], taken: float) -> Snapshot:
        seq = frame["s"]
        if frame.get("full"):
            self._reset()
        elif seq != self.seq + 1:
            raise ProtocolError(f"snapshot {seq} after {self.seq}: frames were lost")
        self.seq = seq
        wall = float(frame["w"])
        self._ncpu = int(frame.get("n", self._ncpu))
        if "e" in frame:
            self._errors = tuple(visible(str(e)) for e in frame["e"])
        self._guests_from(frame, wall)
        if "go" in frame:
            self._order = [str(n) for n in frame["go"]]
        if self._procs_from(frame):
            self._proc_rows = tuple(row for _k, (_w, row) in sorted(self._procs.items()))
        guests = tuple(self._guests[n][1] for n in self._order if n in self._guests)
        self.last = Snapshot(taken=taken, wall=wall, guests=guests, procs=self._proc_rows,
                             ncpu=self._ncpu, errors=self._errors)  # fmt: skip
        return self.last

    def _guests_from(self, frame: dict[str, Any], wall: float) -> None:
        fresh: set[str] = set()
        for wire in frame.get("g", ()):
            self._guests[str(wire[self._name_at])] = (wire, self._guest(wire, wall))
            fresh.add(str(wire[self._name_at]))
        for item in frame.get("gd", ()):
            name = str(item[0])
            wire = _apply(self._guests[name][0], item[1:])
            self._guests[name] = (wire, self._guest(wire, wall))
            fresh.add(name)
        for name in frame.get("gx", ()):
            self._guests.pop(str(name), None)
        if self._uptime is None:
            return
        for name, (wire, guest) in self._guests.items():
            started = wire[self._uptime]
            if name not in fresh and started is not None:
                uptime = max(0.0, wall - float(started))
                self._guests[name] = (wire, dataclasses.replace(guest, uptime=uptime))

    def _guest(self, wire: list[Any], wall: float) -> GuestStatus:
        if self._uptime is not None and wire[self._uptime] is not None:
            wire = list(wire)
            wire[self._uptime] = max(0.0, wall - float(wire[self._uptime]))
        return self.reader.read(GuestStatus, wire)

    def _procs_from(self, frame: dict[str, Any]) -> bool:
        changed = False
        for wire in frame.get("p", ()):
            key = (wire[self._pid_at], wire[self._st_at])
            self._procs[key] = (wire, self.reader.read(ProcRow, wire))
            changed = True
        for item in frame.get("pd", ()):
            key = (item[0], item[1])
            wire = _apply(self._procs[key][0], item[2:])
            self._procs[key] = (wire, self.reader.read(ProcRow, wire))
            changed = True
        gone = frame.get("px", ())
        for i in range(0, len(gone) - 1, 2):
            self._procs.pop((gone[i], gone[i + 1]), None)
            changed = True
        return changed
