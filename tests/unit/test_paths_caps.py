"""engine.paths, engine.caps and the shared CLI argument handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import caps
from engine.errors import UnknownCapability, VstuiError
from engine.paths import IFNAMSIZ, Paths
from vstui.cli.common import split_root


def test_default_root_paths() -> None:
    p = Paths.from_root("/")
    assert p.config_file("web") == Path("/etc/vserver/web.conf")
    assert p.guest_root("web") == Path("/vservers/web")
    assert p.run_dir("web") == Path("/run/vservers/web")
    assert p.log_file("web") == Path("/var/log/vservers/web.log")
    assert p.cgroup_name("web") == "vstui/web"
    assert p.link_name("web") == "vs-web"


def test_paths_under_a_root(tmp_path: Path) -> None:
    p = Paths.from_root(tmp_path)
    assert p.config_file("web") == tmp_path / "etc/vserver/web.conf"
    assert p.guest_root("web") == tmp_path / "vservers/web"
    assert p.cgroup_name("web").startswith("vstui-")


def test_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VSTUI_ROOT", str(tmp_path))
    assert Paths.from_root(None).root == tmp_path


def test_two_roots_never_share_kernel_names(tmp_path: Path) -> None:
    a, b = Paths.from_root(tmp_path / "a"), Paths.from_root(tmp_path / "b")
    assert a.cgroup_name("web") != b.cgroup_name("web")
    assert a.link_name("web") != b.link_name("web")


def test_long_link_names_fit_and_stay_distinct() -> None:
    p = Paths.from_root("/")
    one = p.link_name("a-very-long-guest-name-number-1")
    two = p.link_name("a-very-long-guest-name-number-2")
    assert len(one) <= IFNAMSIZ and len(two) <= IFNAMSIZ
    assert one != two


def test_default_set_and_s_caps() -> None:
    eff = caps.effective_set(["CAP_NET_RAW", "!CAP_SYS_CHROOT", "sys_time"])
    assert "NET_RAW" in eff and "SYS_TIME" in eff
    assert "SYS_CHROOT" not in eff
    assert "SYS_ADMIN" not in eff
    assert caps.DEFAULT_GUEST_CAPS <= caps.all_caps()


def test_unknown_capability_is_named() -> None:
    with pytest.raises(UnknownCapability, match="CAP_FLY"):
        caps.normalize("CAP_FLY")


def test_mask_round_trip() -> None:
    assert caps.from_mask(caps.to_mask(caps.DEFAULT_GUEST_CAPS)) == caps.DEFAULT_GUEST_CAPS
    assert caps.number("CAP_SYS_ADMIN") == 21


@pytest.mark.parametrize(
    ("argv", "root", "rest"),
    [
        (["--root", "/x", "web", "start"], "/x", ["web", "start"]),
        (["web", "start", "--root=/x"], "/x", ["web", "start"]),
        (
            ["web", "build", "-t", "skeleton", "--root", "/x"],
            "/x",
            ["web", "build", "-t", "skeleton"],
        ),
    ],
)
def test_root_anywhere(argv: list[str], root: str, rest: list[str]) -> None:
    assert split_root(argv) == (root, rest)


def test_root_not_taken_from_a_guest_command() -> None:
    assert split_root(["web", "exec", "tool", "--root", "/y"], stop_at=2) == (
        None,
        ["web", "exec", "tool", "--root", "/y"],
    )


def test_root_needs_a_value() -> None:
    with pytest.raises(VstuiError):
        split_root(["--root"])
