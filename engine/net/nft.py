"""nftables through libnftables, the library the ``nft`` tool is built on.

A script of nft commands runs as one netlink transaction: all of it applies
or none does. Debian's ``python3-nftables`` is the same thin ctypes layer
over this library, installed for the system Python only (our venv cannot
import it), so the few calls are bound here. The library is loaded on first
use; a host without it gets a NetError naming the package.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from engine.errors import NetError

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
_lib: Any = None
_lock = threading.Lock()  # one context at a time: the library's buffers are per context


class NftError(NetError):
    """nftables refused a script; ``missing`` when it named something that is not there."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def _library() -> Any:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError:
            raise NetError(f"nftables library {LIBRARY} not found; install it "
                           "(apt-get install libnftables1)") from None  # fmt: skip
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _lib = lib
    return _lib


def run(script: str) -> str:
    """Run nft commands (one transaction); their output, or NftError."""
    lib = _library()
    with _lock:
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NetError("cannot create an nftables context (out of memory?)")
        try:
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            failed = lib.nft_run_cmd_from_buffer(ctx, script.encode())
            output = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        finally:
            lib.nft_ctx_free(ctx)
    if failed:
        first = next((line for line in error.splitlines() if line.startswith("Error")), error)
        missing = "No such file or directory" in error
        raise NftError(f"nftables refused the rules: {first.strip()}", missing)
    return output


def available() -> bool:
    """Whether libnftables can be loaded (without it no table can exist)."""
    try:
        _library()
    except NetError:
        return False
    return True


def delete_table(family: str, name: str) -> bool:
    """Remove a table and everything in it; False when it was not there."""
    if not available():
        return False
    try:
        run(f"delete table {family} {name}")
    except NftError as exc:
        if exc.missing:
            return False
        raise
    return True
