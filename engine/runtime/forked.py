"""Run a function in a short-lived child process and get its error back.

The supervisor stays small by never importing the heavy parts (storage,
cgroups, network) itself: each start or teardown runs in a forked child
that imports what it needs and exits. A failure comes back as one line.
"""

from __future__ import annotations

import os

from engine.errors import VstuiError

TYPE_CHECKING = False  # not typing's: the supervisor must not import typing
if TYPE_CHECKING:
    from collections.abc import Callable


def one_line(exc: BaseException) -> str:
    """The exception as one line, the way the CLI prints engine errors."""
    if isinstance(exc, VstuiError):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split()) or type(exc).__name__


def read_all(fd: int) -> bytes:
    """Read a pipe to EOF, then close it."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _wants_trace() -> bool:
    """A bug's traceback goes to a log (the supervisor's stderr), not to a terminal.

    On a terminal the caller prints the one-line error; VSTUI_DEBUG=1 adds it there too.
    """
    return bool(os.environ.get("VSTUI_DEBUG")) or not os.isatty(2)


def run(func: Callable[[], None], guest: str | None = None, keep: tuple[int, ...] = ()) -> None:
    """Call ``func`` in a forked child; raise VstuiError with its error line."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            func()
        except BaseException as exc:
            code = 1
            try:
                os.write(w, one_line(exc).encode(errors="replace"))
                if not isinstance(exc, VstuiError) and _wants_trace():
                    import traceback

                    traceback.print_exc()
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(w)
    message = read_all(r).decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise VstuiError(message or f"helper process failed (status {status})", guest)


def detached(func: Callable[[], int], guest: str | None = None) -> int:
    """``func()``'s int result, computed in a child in its own session.

    For operations made of steps that must all happen (restart: stop, then
    start): a caller killed meanwhile (SIGTERM from `timeout`, Ctrl-C, a
    dropped ssh session) no longer stops them half-way; SIGKILL of the
    caller's own process group does not reach the child either. The child's
    error comes back as one line.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            os.setsid()
            code = func() & 0x7F
        except BaseException as exc:
            code = 0x80
            try:
                os.write(w, one_line(exc).encode(errors="replace"))
            except OSError:
                pass  # the caller is gone: the work was done all the same
        finally:
            os._exit(code)
    os.close(w)
    message = read_all(r).decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0x80 or code < 0:
        raise VstuiError(message or f"helper process failed (status {status})", guest)
    return code
