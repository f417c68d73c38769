"""The start's seccomp program cache: keyed by every config field, never trusted blindly."""

from __future__ import annotations

import os

import pytest

from engine.runtime import starting


class FakeConfig:
    __slots__ = ("flags", "name", "seccomp")

    def __init__(self, flags: frozenset[str], seccomp: tuple[str, ...]) -> None:
        self.name, self.flags, self.seccomp = "web", flags, seccomp


PROGRAM = bytes(range(16))


def test_key_ignores_set_order_but_not_values() -> None:
    a = starting._seccomp_key(FakeConfig(frozenset({"lock", "sched"}), ("-keyctl",)), "src")
    b = starting._seccomp_key(FakeConfig(frozenset({"sched", "lock"}), ("-keyctl",)), "src")
    c = starting._seccomp_key(FakeConfig(frozenset({"sched"}), ("-keyctl",)), "src")
    d = starting._seccomp_key(FakeConfig(frozenset({"sched", "lock"}), ("+keyctl",)), "src")
    e = starting._seccomp_key(FakeConfig(frozenset({"sched", "lock"}), ("-keyctl",)), "src2")
    assert a == b
    assert len({a, c, d, e}) == 4


@pytest.mark.skipif(os.geteuid() != 0, reason="the cache trusts root-owned files only")
def test_cache_round_trip_and_key_mismatch(tmp_path) -> None:
    cache = os.fspath(tmp_path / "seccomp-cache" / "web.bpf")
    starting._write_cache(cache, b"key", PROGRAM)
    assert os.stat(cache).st_mode & 0o777 == 0o600
    assert starting._read_cache(cache, b"key") == PROGRAM
    assert starting._read_cache(cache, b"other") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the cache trusts root-owned files only")
def test_cache_refuses_group_writable_or_truncated(tmp_path) -> None:
    cache = os.fspath(tmp_path / "web.bpf")
    starting._write_cache(cache, b"key", PROGRAM)
    os.chmod(cache, 0o620)
    assert starting._read_cache(cache, b"key") is None
    os.chmod(cache, 0o600)
    with open(cache, "ab") as f:
        f.write(b"\1\2\3")  # not whole sock_filter entries
    assert starting._read_cache(cache, b"key") is None


def test_missing_cache_reads_as_none(tmp_path) -> None:
    assert starting._read_cache(os.fspath(tmp_path / "none.bpf"), b"key") is None
