"""Keep a wheel of every package installed in this venv, for installs without a network.

    .venv/bin/python scripts/wheelhouse.py DIR

setup.sh runs this after each successful install and gives DIR to pip as
``--find-links``: a later install (CI's clean clone, a second checkout) then
finds every pinned package even when the package index cannot be reached.
Each wheel is packed again from the installed files its RECORD lists, with the
tags of its WHEEL file; a wheel already in DIR is kept, and the project itself
(installed editable, no WHEEL file) is skipped.
"""

from __future__ import annotations

import csv
import os
import sys
import zipfile
from importlib.metadata import Distribution, distributions
from pathlib import Path

PROJECT = "vstui"  # installed editable from the checkout: never a wheel here


def wheel_name(dist: Distribution) -> str | None:
    """``name-version-tag.whl`` from the dist-info's WHEEL file; None when it has none."""
    wheel = dist.read_text("WHEEL")
    if not wheel:
        return None
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    if not tags:
        return None
    pythons, abis, platforms = (sorted({t.split("-")[k] for t in tags}) for k in range(3))
    tag = "-".join(".".join(part) for part in (pythons, abis, platforms))
    name = dist.metadata["Name"].replace("-", "_").replace(".", "_")
    return f"{name}-{dist.version}-{tag}.whl"


def archive_name(dist: Distribution, path: str, scripts: set[str]) -> str | None:
    """Where an installed file goes in the wheel; None for what pip makes again."""
    if "__pycache__" in path or path.startswith("/"):
        return None
    if not path.startswith(".."):
        return path
    name = os.path.basename(path)
    if os.path.basename(os.path.dirname(path)) != "bin" or name in scripts:
        return None  # console scripts: pip writes them from entry_points.txt
    # a file the wheel shipped in its .data/scripts (ruff's binary)
    return f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.data/scripts/{name}"


def pack(dist: Distribution, target: Path) -> None:
    """The installed files of ``dist`` as a wheel at ``target`` (written, then renamed)."""
    base = Path(str(dist.locate_file("")))
    scripts = {e.name for e in dist.entry_points if e.group in ("console_scripts", "gui_scripts")}
    record = dist.read_text("RECORD") or ""
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as whl:
        for row in csv.reader(record.splitlines()):
            inside = archive_name(dist, row[0], scripts) if row else None
            source = base / row[0] if row else base
            if inside and source.is_file():
                whl.write(source, inside)
    os.replace(tmp, target)


def main() -> int:
    house = Path(sys.argv[1])
    house.mkdir(parents=True, exist_ok=True)
    for dist in distributions():
        if dist.metadata["Name"] == PROJECT:
            continue
        name = wheel_name(dist)
        if name and not (house / name).exists():
            pack(dist, house / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
