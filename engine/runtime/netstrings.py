"""Netstrings (``LEN:BYTES,``): the one encoding of every plan the C helpers read.

A leaf module (no imports): the lean supervisor and the exec path use it too.
"""

from __future__ import annotations


def encode(raw: bytes) -> bytes:
    return b"%d:%s," % (len(raw), raw)


def parse(data: bytes) -> list[bytes]:
    """The fields of ``data``; ValueError when it is not netstrings."""
    fields, at = [], 0
    while at < len(data):
        colon = data.find(b":", at)
        if colon < 0 or not data[at:colon].isdigit():
            raise ValueError(f"plan: malformed at byte {at}")
        end = colon + 1 + int(data[at:colon])
        if data[end : end + 1] != b",":
            raise ValueError(f"plan: malformed at byte {at}")
        fields.append(data[colon + 1 : end])
        at = end + 1
    return fields


def ops(data: bytes, arities: dict[str, int]) -> list[tuple[str, list[bytes]]]:
    """Split a plan into (op, arguments) by the op table (see bootplan.ARITY_*)."""
    fields, out, at = parse(data), [], 0
    while at < len(fields):
        name = fields[at].decode()
        if name not in arities:
            raise ValueError(f"plan: unknown op {name!r}")
        used = _arity(arities[name], fields, at + 1)
        out.append((name, fields[at + 1 : at + 1 + used]))
        at += 1 + used
    return out


def _arity(arity: int, fields: list[bytes], at: int) -> int:
    if arity >= 0:
        return arity
    used = 1 + int(fields[at])  # a counted list
    if arity == -2:  # two counted lists (exec N ARGV... M ENV...)
        used += 1 + int(fields[at + used])
    return used
