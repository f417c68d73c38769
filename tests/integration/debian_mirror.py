"""The Debian guest tests' one need outside this machine: the Debian mirror.

A machine's first run debootstraps each suite from deb.debian.org and caches
the result under /var/cache/vstui-tests; later runs copy the cache. When the
mirror cannot be reached and nothing is cached yet (this workplace's machines
lose their outside address at times: eth0 with no address, no route), those
tests are skipped with the reason, not failed: nothing in vstui is wrong, and
the skip shows in pytest's summary. Any other debootstrap failure still fails.
"""

from __future__ import annotations

import pytest

# what debootstrap (and apt under it) prints when it gets no answer from the mirror
UNREACHABLE = (
    "Failed getting release file",
    "Temporary failure in name resolution",
    "Could not resolve",
    "Network is unreachable",
)


def skip_if_unreachable(output: str) -> None:
    """Skips the calling test when ``output`` (debootstrap's, or a build's error
    quoting it) says that the Debian mirror could not be reached."""
    if any(sign in output for sign in UNREACHABLE):
        last = output.strip().splitlines()[-1] if output.strip() else output
        pytest.skip(f"the Debian mirror cannot be reached and no image is cached: {last}")
