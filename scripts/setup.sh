#!/usr/bin/env bash
# Set up everything flowtop needs on a Debian 12 / Ubuntu machine, as root.
# Idempotent: a second run only checks and prints "ok" lines.
#
#   system packages (bcc, bpftool, iproute2, test ground-truth tools; man-db and zsh for
#   the installed manual page and completion), kernel headers
#   (with a fallback when the running kernel has no headers package), bpffs and tracefs
#   mounts, and the repo's .venv with bcc linked in and flowtop installed editable.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
SYS_PYTHON=/usr/bin/python3
BCC_DIR=/usr/lib/python3/dist-packages/bcc
KREL="$(uname -r)"
MODDIR="/lib/modules/$KREL"

PACKAGES=(
    python3-bpfcc libbpfcc bpftool iproute2 python3-venv python3-pip
    tshark nfdump iperf3 nftables tmux ethtool tcpdump iputils-ping prometheus
    man-db zsh
    softflowd fprobe pmacct nfdump-sflow
)

step() { printf 'setup: %s\n' "$*"; }
die() {
    printf 'setup: ERROR: %s\n' "$*" >&2
    exit 1
}

export DEBIAN_FRONTEND=noninteractive

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"
command -v apt-get >/dev/null || die "apt-get not found: only Debian/Ubuntu are supported"

# --- system packages -------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        step "apt-get update"
        apt-get update -q >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

# True when apt knows an installable version of the package (needs fresh lists).
has_candidate() {
    local cand
    cand="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    [[ -n "$cand" && "$cand" != "(none)" ]]
}

apt_install() {
    apt_update_once
    step "apt-get install $*"
    apt-get install -y -q --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    # tshark asks whether non-root users may capture; answer once, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections
    apt_install "${missing[@]}"
else
    step "system packages: ok (${#PACKAGES[@]} installed)"
fi

# --- kernel headers --------------------------------------------------------------------

# A link (or dir) is usable when it resolves to an existing directory.
usable_dir() { [[ -d "$1" ]]; }

headers_meta_and_flavour() {
    # Prints "<meta package> <flavour suffix of /usr/src/linux-headers-*-FLAVOUR>".
    local arch id
    arch="$(dpkg --print-architecture)"
    # shellcheck disable=SC1091
    id="$(. /etc/os-release && echo "${ID:-debian}")"
    if [[ "$id" == ubuntu ]]; then
        echo "linux-headers-generic generic"
    elif [[ "$arch" == amd64 || "$arch" == arm64 ]]; then
        echo "linux-headers-cloud-$arch cloud-$arch"
    else
        echo "linux-headers-$arch $arch"
    fi
}

link_fallback_headers() {
    local flavour="$1" build common
    build="$(find /usr/src -maxdepth 1 -type d -name "linux-headers-*-$flavour" \
        | sort -V | tail -n 1)"
    [[ -n "$build" ]] || die "no /usr/src/linux-headers-*-$flavour after installing headers"
    # Debian: linux-headers-X-cloud-amd64 + linux-headers-X-common;
    # Ubuntu: linux-headers-X-generic + linux-headers-X.
    common="${build%-"$flavour"}-common"
    usable_dir "$common" || common="${build%-"$flavour"}"
    mkdir -p "$MODDIR"
    for pair in "build:$build" "source:$common"; do
        local name="${pair%%:*}" target="${pair#*:}" path
        path="$MODDIR/$name"
        if [[ -e "$path" && ! -L "$path" ]]; then
            step "headers: $path is a real directory, left alone"
        elif usable_dir "$path"; then
            step "headers: $name link ok -> $(readlink "$path")"
        elif usable_dir "$target"; then
            ln -sfn "$target" "$path"
            step "headers: linked $path -> $target (fallback, UAPI-only programs)"
        fi
    done
}

if usable_dir "$MODDIR/build"; then
    step "kernel headers: ok ($MODDIR/build -> $(readlink -f "$MODDIR/build"))"
else
    exact="linux-headers-$KREL"
    if is_installed "$exact"; then
        die "$exact is installed but $MODDIR/build is missing; reinstall it"
    fi
    apt_update_once
    if has_candidate "$exact"; then
        apt_install "$exact"
    else
        read -r meta flavour < <(headers_meta_and_flavour)
        step "kernel headers: no $exact package; using $meta as fallback"
        is_installed "$meta" || apt_install "$meta"
        link_fallback_headers "$flavour"
    fi
    usable_dir "$MODDIR/build" || die "kernel headers still missing at $MODDIR/build"
fi

# --- pseudo filesystems ----------------------------------------------------------------

ensure_mount() {
    local fstype="$1" dir="$2"
    if mountpoint -q "$dir"; then
        step "$fstype: ok (mounted at $dir)"
    else
        mkdir -p "$dir" 2>/dev/null || true
        mount -t "$fstype" "$fstype" "$dir" || die "cannot mount $fstype at $dir"
        step "$fstype: mounted at $dir"
    fi
}
ensure_mount bpf /sys/fs/bpf
ensure_mount tracefs /sys/kernel/tracing

# --- python environment ----------------------------------------------------------------

[[ -x "$SYS_PYTHON" ]] || die "$SYS_PYTHON not found (install python3)"
[[ -d "$BCC_DIR" ]] || die "$BCC_DIR not found (install python3-bpfcc)"

if [[ ! -x "$VENV/bin/python" ]]; then
    step "creating $VENV with $SYS_PYTHON"
    "$SYS_PYTHON" -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
else
    step "venv: ok ($VENV)"
fi

site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [[ "$(readlink "$site/bcc" 2>/dev/null || true)" != "$BCC_DIR" ]]; then
    ln -sfn "$BCC_DIR" "$site/bcc"
    step "bcc: linked $site/bcc -> $BCC_DIR"
else
    step "bcc: ok (linked into venv)"
fi

stamp="$VENV/.flowtop-pyproject.sha256"
want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" == "$want" ]] && [[ -x "$VENV/bin/flowtop" ]]; then
    step "python packages: ok (pyproject.toml unchanged)"
else
    step "pip install -e '.[test]' (this takes a minute the first time)"
    rm -f "$stamp"
    log="$VENV/pip-install.log"
    if ! "$VENV/bin/pip" install --disable-pip-version-check -e "${REPO_ROOT}[test]" \
        >"$log" 2>&1; then
        grep -v 'is ignored: it is neither a file nor a directory' "$log" | tail -n 30 >&2
        die "pip install -e '.[test]' failed (full log: $log)"
    fi
    echo "$want" >"$stamp"
fi

"$VENV/bin/python" -c 'import bcc, pyroute2, numpy' \
    || die "import bcc, pyroute2, numpy failed in $VENV"
step "done: python imports bcc, pyroute2, numpy"
