"""``chbind``: run a command that may use only the given host addresses.

    chbind [--root DIR] --ip ADDR[/MASK] [--ip ADDR]... [--bcast B] [--silent]
           [--raw] [--] CMD [ARGS...]

As util-vserver's chbind: the command shares the host's network, a bind to
0.0.0.0 (or ::) lands on the first given address of that family, a bind to
any other address fails, and outgoing connections leave from the first
given address; every packet its sockets send or receive must carry a given
address (``engine.net.bind``). It runs without CAP_NET_RAW (no raw or packet
sockets) unless ``--raw``, and without the capabilities that could undo
this. Each address must already be on a host device. Prints
``ipv4root is now ADDR ...`` unless ``--silent``.
``--bcast`` is accepted for compatibility: no address is created, so it has
nothing to set.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.errors import VstuiError, require_root
from engine.paths import Paths
from vstui.cli.common import run_tool

TOOL = "chbind"
USAGE = "usage: chbind --ip ADDR [--ip ADDR]... [--bcast B] [--silent] [--raw] [--] CMD [ARGS...]"
MAX_ADDRESSES = 16  # util-vserver's limit


@dataclass
class Options:
    root: str | None = None
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    bcast: str | None = None
    silent: bool = False
    raw: bool = False
    command: list[str] = field(default_factory=list)


def _address(word: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_interface(word).ip
    except ValueError:
        raise VstuiError(f"--ip '{word}' is not an IPv4 or IPv6 address[/mask]") from None


def parse(argv: Sequence[str]) -> Options:
    opts = Options()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-"):
            break
        name, eq, inline = arg.partition("=")
        if name in ("--silent", "--raw"):
            setattr(opts, name[2:], True)
            i += 1
            continue
        if name in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if name not in ("--ip", "--bcast", "--root"):
            raise VstuiError(f"unknown option {arg}; {USAGE}")
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(args):
            value, i = args[i + 1], i + 2
        else:
            raise VstuiError(f"{name} needs a value; {USAGE}")
        if name == "--ip":
            opts.ips.append(_address(value))
        elif name == "--bcast":
            opts.bcast = str(_address(value))
        else:
            opts.root = value
    opts.command = args[i:]
    if not opts.ips:
        raise VstuiError(f"give at least one --ip; {USAGE}")
    if len(opts.ips) > MAX_ADDRESSES:
        raise VstuiError(f"at most {MAX_ADDRESSES} --ip addresses")
    if not opts.command:
        raise VstuiError(f"no command to run; {USAGE}")
    return opts


def body(argv: Sequence[str]) -> int:
    opts = parse(argv)
    require_root("chbind")
    from engine.net import bind

    bind.check_owned(opts.ips)
    if not opts.silent:
        print("ipv4root is now " + " ".join(str(ip) for ip in opts.ips), flush=True)
    return bind.run_bound(Paths.from_root(opts.root), opts.ips, opts.command, raw=opts.raw)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: body(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
