"""Text formatting for the console: sizes, rates, durations, bars, sparklines.

Pure functions, no Textual import, unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Sequence

SPARK = "▁▂▃▄▅▆▇█"
BAR_FULL = "█"
BAR_EMPTY = "░"


def size(value: int | float | None) -> str:
    """Bytes as a short human size: 512, 1.5K, 256M, 2.0G; '-' when unknown."""
    if value is None:
        return "-"
    step = 1024.0
    amount = float(value)
    for unit in ("", "K", "M", "G", "T"):
        if abs(amount) < step or unit == "T":
            if unit == "":
                return f"{int(amount)}"
            return f"{amount:.1f}{unit}" if amount < 10 else f"{amount:.0f}{unit}"
        amount /= step
    return f"{amount:.0f}P"


def rate(bytes_per_s: float | None) -> str:
    """A byte rate in bits per second, with its unit (the unit of bandwidth
    limits): 0b/s, 480b/s, 9.6kb/s, 12Mb/s, 1.0Gb/s ('-' when unknown)."""
    if bytes_per_s is None:
        return "-"
    return _bits(bytes_per_s * 8) + "b/s"


def _bits(bits: float) -> str:
    """bits as 480, 9.6k, 12M, 1.0G (SI steps, as tc and ip print them)."""
    for unit in ("", "k", "M"):
        if bits < 999.5:
            return f"{bits:.0f}{unit}" if bits >= 9.95 or not unit else f"{bits:.1f}{unit}"
        bits /= 1000
    return f"{bits:.0f}G" if bits >= 9.95 else f"{bits:.1f}G"


def bits(limit: int | None) -> str:
    """A bandwidth limit in bits/s ('unlimited' for None): 10Mbit/s."""
    return "unlimited" if limit is None else _bits(limit) + "bit/s"


def duration(seconds: float | None) -> str:
    """Uptime as 45s, 12m, 3h04m, 2d03h; '-' when stopped."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def used_of(used: int | None, limit: int | None, unit=size) -> str:
    """'120M/256M', '120M/-' for unlimited, '?' for unknown."""
    if used is None:
        return "?"
    return f"{unit(used)}/{unit(limit) if limit else '-'}"


def bar(ratio: float | None, width: int) -> str:
    """A left-filled bar of ``width`` cells; blank when unknown or unlimited."""
    if ratio is None or width <= 0:
        return " " * max(width, 0)
    filled = round(min(max(ratio, 0.0), 1.0) * width)
    return BAR_FULL * filled + BAR_EMPTY * (width - filled)


def gauge(ratio: float | None, width: int) -> str:
    """A bar that carries its number, ``███░░  62%``; blank when unknown or
    unlimited. The number reads without colour (a monochrome terminal, a
    copy-paste), the bar at a glance."""
    if ratio is None or width < 6:
        return " " * max(width, 0)
    number = f"{min(ratio * 100, 999):4.0f}%"
    return bar(ratio, width - len(number) - 1) + " " + number


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last ``width`` values as block characters scaled to ``top`` (or their max)."""
    tail = list(values)[-width:]
    if not tail:
        return " " * width
    peak = top if top else max(max(tail), 1e-9)
    chars = [SPARK[min(len(SPARK) - 1, int(v / peak * (len(SPARK) - 1) + 0.5))] for v in tail]
    return (" " * (width - len(chars))) + "".join(chars)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def config_size(value: int | None) -> str:
    """Bytes back into NAME.conf syntax: 268435456 -> '256M'."""
    if value is None:
        return ""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value % factor == 0 and value >= factor:
            return f"{value // factor}{unit}"
    return str(value)


def config_rate(value: int | None) -> str:
    """bits/s back into tc rate syntax: 10000000 -> '10mbit'."""
    if value is None:
        return ""
    for unit, factor in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if value % factor == 0 and value >= factor:
            return f"{value // factor}{unit}"
    return f"{value}bit"


def config_percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g}%"
