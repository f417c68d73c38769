"""The engine's one error boundary (engine.errors.boundary) and the CLI's use of it."""

from __future__ import annotations

import errno

import pytest

from engine.errors import KernelError, VstuiError, boundary
from vstui.cli import vserver


def test_an_oserror_leaves_naming_the_operation_the_file_and_the_guest() -> None:
    with pytest.raises(KernelError) as caught, boundary("start", "web"):
        raise OSError(errno.ENOSPC, "No space left on device", "/run/vservers/web/state")
    assert caught.value.guest == "web"
    assert caught.value.message == "start `/run/vservers/web/state`: No space left on device"
    assert isinstance(caught.value.__cause__, OSError)


def test_a_call_on_no_file_names_the_path_given_or_none() -> None:
    with pytest.raises(KernelError) as caught, boundary("write", "web", path="/etc/web.conf"):
        raise OSError(errno.ENOSPC, "No space left on device")  # what write(2) raises
    assert caught.value.message == "write `/etc/web.conf`: No space left on device"
    with pytest.raises(KernelError) as caught, boundary("stop", "web"):
        raise OSError(errno.EIO, "Input/output error")
    assert caught.value.message == "stop: Input/output error"  # never "stop ``"


def test_an_engine_error_gets_the_guest_and_anything_else_passes() -> None:
    with pytest.raises(VstuiError) as caught, boundary("start", "web"):
        raise VstuiError("no such template")
    assert caught.value.guest == "web"
    with pytest.raises(VstuiError) as caught, boundary("start", "web"):
        raise VstuiError("other guest's fault", "db")
    assert caught.value.guest == "db"
    with pytest.raises(BrokenPipeError), boundary("start", "web"):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")  # the tools' own business
    with pytest.raises(ZeroDivisionError), boundary("start", "web"):
        raise ZeroDivisionError  # a bug stays a bug, with its traceback


def _full_disk(paths: object, name: str, args: object) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_the_cli_names_the_command_and_the_guest_not_the_exception_class(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setitem(vserver.COMMANDS, "status", f"{__name__}:_full_disk")
    assert vserver.main(["--root", str(tmp_path), "web", "status"]) == 1
    assert capsys.readouterr().err == "vserver: web: status: No space left on device\n"
