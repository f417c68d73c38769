"""Bandwidth limits with tc (pyroute2): tbf on egress, ifb for ingress.

Linux shapes only what a link sends. So:

* to limit what a link *sends* (its egress): a tbf qdisc as the link's root;
* to limit what a link *receives*: an ingress qdisc whose u32 match-all
  filter redirects every packet (mirred) to a private ifb device, and a tbf
  on that ifb's egress. The ifb is made per guest, never the shared
  ifb0/ifb1 the kernel creates at boot.

For a veth guest both sit on the host end, where directions swap: what the
guest sends arrives on the host end (V_BANDWIDTH_OUT = host end ingress),
what the guest receives leaves from it (V_BANDWIDTH_IN = host end egress).
For ipvlan/macvlan the same two building blocks run inside the guest's
namespace on its eth0, where directions are the guest's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import NetError
from engine.net import nl

if TYPE_CHECKING:
    from pyroute2 import IPRoute

INGRESS_HANDLE = 0xFFFF0000
ROOT_HANDLE = 0x10000
TC_H_ROOT = 0xFFFFFFFF
ETH_P_ALL = 0x0003
MAX_RATE = (1 << 32) - 1  # tbf's 32-bit rate field, in bytes/s (~34 Gbit/s)
LATENCY = "50ms"  # queue length of the tbf, as time at the configured rate
MIN_BURST = 16 * 1024


def burst_for(bits_per_second: int) -> int:
    """Bucket size: 20 ms worth of the rate, at least 16 KiB (a few full frames).

    Smaller buckets starve TCP on slow rates; bigger ones let short
    transfers run above the limit.
    """
    return max(bits_per_second // 8 // 50, MIN_BURST)


def check_rate(bits_per_second: int, what: str, guest: str | None) -> None:
    if bits_per_second <= 0:
        raise NetError(f"{what} must be a positive rate, e.g. 10mbit", guest)
    if bits_per_second // 8 > MAX_RATE:
        raise NetError(f"{what} {bits_per_second} bit/s is above the 34gbit tbf can shape; "
                       "unset it for no limit", guest)  # fmt: skip


def limit_egress(ipr: IPRoute, link: str, bits_per_second: int | None) -> None:
    """tbf as the root qdisc of ``link`` (replace), or back to the default qdisc."""
    index = nl.link_index(ipr, link)
    if index is None:
        raise NetError(f"link {link} is gone; restart the guest")
    if bits_per_second is None:
        nl.ignore_missing(ipr.tc, "del", index=index, parent=TC_H_ROOT)
        return
    ipr.tc("replace", "tbf", index, ROOT_HANDLE, rate=f"{bits_per_second}bit",
           burst=burst_for(bits_per_second), latency=LATENCY)  # fmt: skip


def limit_ingress(ipr: IPRoute, link: str, ifb: str, bits_per_second: int | None) -> bool:
    """Shape what ``link`` receives through ifb ``ifb``; None removes both.

    Returns True when the ifb exists afterwards (the caller records it).
    """
    index = nl.link_index(ipr, link)
    if index is None:
        raise NetError(f"link {link} is gone; restart the guest")
    if bits_per_second is None:
        nl.ignore_missing(ipr.tc, "del", "ingress", index, INGRESS_HANDLE)
        from engine.net.links import delete_link

        delete_link(ipr, ifb)
        return False
    ifb_index = nl.link_index(ipr, ifb)
    if ifb_index is None:
        ipr.link("add", ifname=ifb, kind="ifb")
        ifb_index = nl.link_index(ipr, ifb)
        ipr.link("set", index=ifb_index, state="up")
    ipr.tc("replace", "tbf", ifb_index, ROOT_HANDLE, rate=f"{bits_per_second}bit",
           burst=burst_for(bits_per_second), latency=LATENCY)  # fmt: skip
    if not _has_ingress(ipr, index):
        ipr.tc("add", "ingress", index, INGRESS_HANDLE)
        ipr.tc("add-filter", "u32", index, parent=INGRESS_HANDLE, prio=1, protocol=ETH_P_ALL,
               keys=["0x0/0x0+0"], target=ROOT_HANDLE + 1,
               action={"kind": "mirred", "direction": "egress", "action": "redirect",
                       "ifindex": ifb_index})  # fmt: skip
    return True


def _has_ingress(ipr: IPRoute, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "ingress" for q in ipr.tc("dump", index=index))


def qdiscs(ipr: IPRoute, link: str) -> list[str]:
    """Kinds of the qdiscs on ``link`` (for tests and the audit)."""
    index = nl.link_index(ipr, link)
    if index is None:
        return []
    return [q.get_attr("TCA_KIND") for q in ipr.tc("dump", index=index)]
