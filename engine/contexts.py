"""Context ids every part agrees on (util-vserver's numbering).

A leaf module: the scanner, the tools and ``engine.datamodel`` (which
re-exports these names) import it without importing each other.
"""

HOST_NAME = ""  # the host row (context 0) has no guest name
HOST_XID = 0
SPECTATOR_XID = 1
