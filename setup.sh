#!/bin/sh
# vstui set-up: installs what the project needs, then runs one thing.
#   ./setup.sh demo    install everything, open the console on a ready demo
#   ./setup.sh test    install everything, run the whole test suite
#   ./setup.sh install install everything only
#   ./setup.sh bench   also install the peers the benchmarks compare against
# Run as root on Debian 12 (or newer). Everything Python lives in ./.venv.
set -eu
cd "$(dirname "$0")"

BENCH_PACKAGES="lxc runc htop hyperfine"
# openssh-server: the many-hosts tests start their own sshd on 127.0.0.1
# (tests/sshd.py); nothing here starts or configures the system's sshd.
APT_PACKAGES="python3 python3-venv python3-dev gcc libc6-dev libcap-dev libseccomp-dev \
  busybox-static e2fsprogs xfsprogs quota iproute2 procps tmux util-linux kmod \
  nftables \
  btrfs-progs zstd acl libcap2-bin \
  openssh-client openssh-server debootstrap"

apt_install() {
    missing=""
    for pkg in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    echo "setup: installing Debian packages:$missing" >&2
    # Wait for another apt/dpkg run (a second set-up, unattended upgrades)
    # instead of failing at once on its lock.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
}

python_bin() {
    # The real interpreter, not a pyenv shim: tools must start fast. The
    # distribution's first (/usr/bin): Debian builds it with PGO and LTO into
    # the executable, where a pyenv build is plain -O3 with a shared
    # libpython; the console's idle CPU is ~70% interpreter.
    for cand in /usr/bin/python3 python3.13 python3.12 python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1; then
            real=$("$cand" -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null || true)
            [ -n "$real" ] && { echo "$real"; return 0; }
        fi
    done
    echo "setup: Python 3.11 or newer not found" >&2
    exit 1
}

# Every package a successful install used, kept as wheels on this machine
# (scripts/wheelhouse.py): later installs (a clean clone, CI) take them from
# here first and need the package index only for what is missing, so a host
# whose network is down still installs.
WHEELS=/var/cache/vstui/wheels

venv_install() {
    if [ ! -x .venv/bin/python ]; then
        "$(python_bin)" -m venv .venv
    fi
    stamp=.venv/.installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        # A plain .pth path entry, no import-hook finder (~18 ms per start):
        # pyproject.toml's package-dir makes setuptools choose it.
        # Made first: on a new machine pip warned once per package that the
        # directory did not exist.
        mkdir -p "$WHEELS"
        if ! .venv/bin/pip install -q --no-index --find-links "$WHEELS" -e '.[test]' 2>/dev/null; then
            pip_quiet .venv/bin/pip install -q --upgrade pip >/dev/null
            pip_quiet .venv/bin/pip install -q --find-links "$WHEELS" -e '.[test]'
        fi
        keep_wheels
        touch "$stamp"
    fi
}

# pip, with its warning for a package location in the host's pip
# configuration that does not exist (repeated for every package it installs:
# a wall of lines on some hosts) said once, with where to look.
pip_quiet() {
    log=$(mktemp)
    status=0
    "$@" 2>"$log" || status=$?
    pattern="^WARNING: Location '.*' is ignored"
    grep -v "$pattern" "$log" >&2 || true
    missing=$(grep "$pattern" "$log" | sort -u | wc -l)
    rm -f "$log"
    if [ "$missing" -gt 0 ]; then
        echo "setup: pip skipped locations named in this host's pip configuration that do not exist ($missing; see: pip config list)" >&2
    fi
    return "$status"
}

keep_wheels() {
    .venv/bin/python scripts/wheelhouse.py "$WHEELS"
    # the build backend pip fetched for the editable install (pyproject's build-system)
    ls "$WHEELS" | grep -qE '^setuptools-(7[7-9]|[89][0-9]|[1-9][0-9]{2,})\.' \
        || .venv/bin/pip download -q --no-deps -d "$WHEELS" 'setuptools>=77' >/dev/null 2>&1 || true
}

build_helpers() {
    .venv/bin/python -m engine.runtime.build
    # The compiled front end (engine/helpers/vserver.c) replaces pip's
    # `vserver` script: `vserver NAME exec` then runs without starting Python,
    # and everything else is handed to the Python tool (vstui.cli.vserver).
    # A copy, not a symlink: pip writes its script back over .venv/bin/vserver
    # on every reinstall (through a symlink it would clobber the binary), and
    # this always runs after pip, so the copy comes back each time. Renamed
    # into place: a `vserver` running meanwhile keeps its old file.
    install -m 0755 engine/helpers/vserver .venv/bin/.vserver.new
    mv -f .venv/bin/.vserver.new .venv/bin/vserver
    # Byte-compile now: with PYTHONDONTWRITEBYTECODE set, every tool start
    # would otherwise recompile the engine (~50 ms).
    .venv/bin/python -m compileall -q engine vstui >/dev/null
}

install_all() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: run as root (it installs Debian packages and runs guests)" >&2
        exit 1
    fi
    apt_install
    venv_install
    build_helpers
}

case "${1:-}" in
    install)
        install_all ;;
    bench)
        APT_PACKAGES="$APT_PACKAGES $BENCH_PACKAGES"
        install_all
        echo "setup: benchmarks: .venv/bin/python -m tests.bench.bench_procs (bench_runtime, bench_tui, bench_net)" >&2 ;;
    demo)
        install_all
        exec .venv/bin/vstui --demo ;;
    test)
        install_all
        .venv/bin/ruff check .
        .venv/bin/ruff format --check .
        .venv/bin/vulture          # dead code ([tool.vulture] in pyproject.toml)
        .venv/bin/lint-imports     # the import contracts ([tool.importlinter])
        exec .venv/bin/pytest -q -rs -p no:cacheprovider ;;  # -rs: each skip with its reason
    *)
        echo "usage: ./setup.sh demo | test | install | bench" >&2
        exit 2 ;;
esac
