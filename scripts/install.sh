#!/usr/bin/env bash
# Install flowtop on a router or server (no checkout needed afterwards), as root:
#
#   - a virtual environment at $PREFIX (/opt/flowtop) made with Debian's /usr/bin/python3
#     and --system-site-packages, so Debian's python3-bpfcc (bcc is not on PyPI) is seen;
#   - the flowtop wheel in it (its dependencies from PyPI, or from PIP_FIND_LINKS);
#   - links to the command ($BINDIR/flowtop), flowtop(1) and the bash and zsh completion
#     (under $DATADIR) where PATH, man, bash-completion and zsh look;
#   - the systemd unit ($UNITDIR/flowtop.service, ExecStart=$BINDIR/flowtop), and
#     $CONFDIR/flowtop.toml from the example, mode 0600 root:root, only if there is none
#     (an existing config is never overwritten). The service is neither enabled nor started.
#
#   scripts/install.sh                 build the wheel from this checkout, install it
#   WHEEL=path/flowtop-*.whl scripts/install.sh   install that wheel
#   scripts/install.sh --wheel DIR     only build the wheel into DIR (`make wheel`)
#
# DESTDIR puts everything under a staging root (the tests use it): paths inside files and
# links are the final ones, but the venv's own scripts name their DESTDIR path, so such a
# tree is for inspection, not for copying to another machine. Re-running upgrades in place.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/opt/flowtop}"
BINDIR="${BINDIR:-/usr/local/bin}"
DATADIR="${DATADIR:-/usr/local/share}"
UNITDIR="${UNITDIR:-/etc/systemd/system}"
CONFDIR="${CONFDIR:-/etc/flowtop}"
SYS_PYTHON="${SYS_PYTHON:-/usr/bin/python3}"
WHEEL="${WHEEL:-}"
# The command path in contrib/flowtop.service; replaced by $BINDIR/flowtop.
UNIT_EXEC=/usr/local/bin/flowtop

step() { printf 'install: %s\n' "$*"; }
die() {
    printf 'install: ERROR: %s\n' "$*" >&2
    exit 1
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

check_python() {
    [[ -x "$SYS_PYTHON" ]] || die "$SYS_PYTHON not found (apt-get install python3)"
    "$SYS_PYTHON" -c 'import ensurepip' 2>/dev/null \
        || die "$SYS_PYTHON cannot make virtual environments (apt-get install python3-venv)"
}

# build_wheel PIP: builds flowtop's wheel from the checkout with that pip (the build tools
# come from PyPI into an isolated build environment) and prints its path. It builds from a
# copy: setuptools would reuse a stale build/ in the checkout (a deleted module included).
build_wheel() {
    local pip="$1" src="$TMP/src" out="$TMP/dist" log="$TMP/wheel.log" wheels
    [[ -f "$REPO_ROOT/setup.py" ]] || die "no checkout at $REPO_ROOT: pass WHEEL=path/to/wheel"
    mkdir -p "$src"
    tar -C "$REPO_ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$src" -xf - \
        || die "copying $REPO_ROOT failed"
    if ! "$pip" wheel --disable-pip-version-check --no-deps -w "$out" "$src" \
        >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "building the wheel failed"
    fi
    wheels=("$out"/flowtop-*-py3-none-any.whl)
    [[ ${#wheels[@]} -eq 1 && -f "${wheels[0]}" ]] || die "pip built no flowtop wheel"
    printf '%s\n' "${wheels[0]}"
}

if [[ "${1:-}" == --wheel ]]; then
    [[ -n "${2:-}" ]] || die "usage: $0 --wheel OUTDIR"
    check_python
    "$SYS_PYTHON" -m venv "$TMP/venv" || die "python3 -m venv failed"
    wheel="$(build_wheel "$TMP/venv/bin/pip")"
    mkdir -p "$2"
    cp "$wheel" "$2/"
    step "built $2/$(basename "$wheel")"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--wheel OUTDIR] (settings in the environment, see the top)"

if [[ -z "$DESTDIR" && $(id -u) -ne 0 ]]; then
    die "must run as root (try: sudo make install), or set DESTDIR"
fi
check_python
"$SYS_PYTHON" -c 'import bcc' 2>/dev/null \
    || die "$SYS_PYTHON cannot import bcc (apt-get install python3-bpfcc)"

[[ -z "$WHEEL" || -f "$WHEEL" ]] || die "no wheel at $WHEEL"
venv="$DESTDIR$PREFIX"
share="$venv/share"

# --- the virtual environment and the wheel ---------------------------------------------

step "virtual environment $venv ($SYS_PYTHON, system site packages)"
"$SYS_PYTHON" -m venv --system-site-packages "$venv" || die "python3 -m venv $venv failed"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

if [[ -z "$WHEEL" ]]; then
    step "building the wheel from $REPO_ROOT"
    WHEEL="$(build_wheel "$venv/bin/pip")"
fi
step "installing $(basename "$WHEEL") and its dependencies"
"${pip[@]}" install "$WHEEL" || die "pip install $WHEEL failed"
# The same version again (a rebuilt checkout): replace flowtop's files, keep the rest.
"${pip[@]}" install --force-reinstall --no-deps "$WHEEL" || die "pip install $WHEEL failed"
"$venv/bin/python" -c 'import bcc' 2>/dev/null \
    || die "bcc is not visible in $venv (was it made without --system-site-packages?)"

# --- the command, the manual page and the completions -----------------------------------

# link TARGET_UNDER_PREFIX LINK: a link at $DESTDIR/LINK to the final path of the target.
link() {
    local target="$1" name="$2"
    [[ -e "$DESTDIR$target" ]] || die "the wheel did not install $target"
    mkdir -p "$(dirname "$DESTDIR$name")"
    ln -sfn "$target" "$DESTDIR$name"
    step "$name -> $target"
}
link "$PREFIX/bin/flowtop" "$BINDIR/flowtop"
link "$PREFIX/share/man/man1/flowtop.1" "$DATADIR/man/man1/flowtop.1"
link "$PREFIX/share/bash-completion/completions/flowtop" \
    "$DATADIR/bash-completion/completions/flowtop"
link "$PREFIX/share/zsh/site-functions/_flowtop" "$DATADIR/zsh/site-functions/_flowtop"

# --- the service -------------------------------------------------------------------------

unit_src="$share/flowtop/flowtop.service"
unit="$DESTDIR$UNITDIR/flowtop.service"
grep -q "^ExecStart=$UNIT_EXEC " "$unit_src" \
    || die "$unit_src: no 'ExecStart=$UNIT_EXEC ...' line to point at $BINDIR/flowtop"
mkdir -p "$(dirname "$unit")"
sed "s|^ExecStart=$UNIT_EXEC |ExecStart=$BINDIR/flowtop |" "$unit_src" >"$TMP/flowtop.service"
install -m 0644 "$TMP/flowtop.service" "$unit"
step "unit $UNITDIR/flowtop.service (ExecStart=$BINDIR/flowtop)"

config="$DESTDIR$CONFDIR/flowtop.toml"
if [[ -e "$config" || -L "$config" ]]; then
    step "config $CONFDIR/flowtop.toml exists: kept"
else
    owner=()
    [[ $(id -u) -eq 0 ]] && owner=(-o root -g root)
    install -d -m 0755 "${owner[@]}" "$DESTDIR$CONFDIR"
    # The service reads it as root; flowtop refuses a config others can write.
    install -m 0600 "${owner[@]}" "$share/flowtop/flowtop.toml" "$config"
    step "config $CONFDIR/flowtop.toml (mode 0600, from the example: edit it)"
fi

if [[ -z "$DESTDIR" ]] && [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl daemon-reload || true
fi
step "done: $BINDIR/flowtop doctor; after editing $CONFDIR/flowtop.toml:" \
    "systemctl enable --now flowtop"
