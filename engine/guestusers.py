"""A guest's /etc/passwd and /etc/group: the one parser the host uses for them.

Both files belong to the guest, so every field is hostile: a line may be short,
a number may be '²' (str.isdigit says yes, int() raises), 400 digits, or above
what a uid_t holds. NSS is never used (it would load the guest's libraries into
the host's process). A malformed line is skipped, as glibc's files backend does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (uid_t)-1 means "no change" to setresuid(2) (kernel/sys.c): never a user
MAX_ID = 2**32 - 2


def parse_id(word: str) -> int | None:
    """A uid or gid written in ASCII digits within 0..MAX_ID; None otherwise."""
    if not (0 < len(word) <= 10 and word.isascii() and word.isdigit()):
        return None
    value = int(word)
    return value if value <= MAX_ID else None


@dataclass(slots=True)
class User:
    name: str
    uid: int
    gid: int
    home: str = "/"
    shell: str = "/bin/sh"
    groups: list[int] = field(default_factory=list)


def users(text: str) -> list[User]:
    """The well-formed entries of a passwd file."""
    found = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) < 7:
            continue
        uid, gid = parse_id(f[2]), parse_id(f[3])
        if f[0] and uid is not None and gid is not None:
            found.append(User(f[0], uid, gid, f[5] or "/", f[6] or "/bin/sh"))
    return found


def find_user(text: str, who: str) -> User | None:
    """``who`` (a name, else a number) in a passwd file's text."""
    uid = parse_id(who)
    for user in users(text):
        if user.name == who or user.uid == uid:
            return user
    return None


def groups_of(text: str, name: str) -> list[int]:
    """The gids of the group file's groups that list ``name`` as a member."""
    gids = []
    for line in text.splitlines():
        f = line.split(":")
        gid = parse_id(f[2]) if len(f) >= 4 else None
        if gid is not None and name in f[3].split(","):
            gids.append(gid)
    return gids
