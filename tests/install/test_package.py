"""flowtop as a package: the wheel, `make install`, and the installed flowtop at work.

The wheel is built (`pip wheel`, build tools from PyPI) from a copy of this checkout, so
the build leaves nothing in the shared tree and needs nothing outside the files it ships.
`make install DESTDIR=<tmp>` then does what it does on a router: a virtual environment
from /usr/bin/python3 with --system-site-packages (Debian's bcc), the wheel and its
dependencies in it, links, the unit and the config. That fresh environment, outside the
checkout, is the flowtop under test: `doctor`, a `dump` in a test namespace with counted
traffic, and a recording made live and replayed, both in tmux. Every command runs from a
directory outside the checkout with a clean environment (no PYTHONPATH, no FLOWTOP_*).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowtop import __version__
from flowtop.cli import build_parser
from tests.kernel import netns
from tests.kernel.dump import READY_MARK, DumpResult
from tests.tui import test_e2e_tmux
from tests.tui.test_e2e_tmux import Tmux

ROOT = Path(__file__).resolve().parents[2]
# The same quiet A <-> B pair fixture as the tmux end-to-end tests.
quiet_pair = test_e2e_tmux.quiet_pair
PREFIX = "/opt/flowtop"  # scripts/install.sh's defaults
BINDIR = "/usr/local/bin"
DATADIR = "/usr/local/share"
UNIT = "/etc/systemd/system/flowtop.service"
CONFIG = "/etc/flowtop/flowtop.toml"
SHARE = {  # installed under the venv's share/ by the wheel, linked from DATADIR
    "man/man1/flowtop.1",
    "bash-completion/completions/flowtop",
    "zsh/site-functions/_flowtop",
}
_TOP_IGNORE = {".git", ".venv", "build", "dist", "screenshots"}  # only at the top level
_ANY_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*_cache")


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    top = _TOP_IGNORE if Path(directory) == ROOT else set()
    return top & set(names) | set(_ANY_IGNORE(directory, names))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, BPF, TC)")


def clean_env() -> dict[str, str]:
    """This environment without what would point Python or flowtop at the checkout."""
    # COLUMNS/LINES: a child of pytest inherits COLUMNS=80 LINES=24 from the C-level
    # environment (not in os.environ), which would pin a TUI in tmux to 80x24.
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FLOWTOP_")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def run(
    cmd: list[str], cwd: Path, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
        )
    return proc


@dataclass(frozen=True)
class Install:
    """What `make install DESTDIR=root` made; `away` is a directory outside the checkout."""

    root: Path
    wheel: Path
    away: Path

    @property
    def venv(self) -> Path:
        return self.root / PREFIX.lstrip("/")

    @property
    def flowtop(self) -> Path:
        return self.venv / "bin" / "flowtop"

    def path(self, final: str) -> Path:
        return self.root / final.lstrip("/")


def make_install(root: Path, wheel: Path, cwd: Path) -> str:
    """`make install DESTDIR=root WHEEL=wheel` from the checkout; its output."""
    cmd = ["make", "-C", str(ROOT), "install", f"DESTDIR={root}", f"WHEEL={wheel}"]
    return run(cmd, cwd, timeout=300).stdout


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the checkout to build from (the build writes build/ and *.egg-info)."""
    src = tmp_path_factory.mktemp("src") / "flowtop"
    shutil.copytree(ROOT, src, ignore=_copy_ignore, symlinks=True)
    try:
        yield src
    finally:
        shutil.rmtree(src.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    try:
        run([*PIP, "wheel", "--no-deps", "-q", "-w", str(out), str(source)], out, timeout=300)
        wheels = sorted(out.glob("flowtop-*-py3-none-any.whl"))
        assert len(wheels) == 1, wheels
        yield wheels[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("root")
    away = tmp_path_factory.mktemp("away")
    assert not away.is_relative_to(ROOT) and not root.is_relative_to(ROOT)
    try:
        make_install(root, wheel, away)
        yield Install(root, wheel, away)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(away, ignore_errors=True)


# --------------------------------------------------------------------------- #
# the wheel
# --------------------------------------------------------------------------- #


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    """The long options `--help` shows (hidden ones are in no page or completion)."""
    return {
        o
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        for o in a.option_strings
        if o.startswith("--")
    }


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def test_wheel_carries_the_data_files_and_generated_pages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())

        def read(name: str) -> bytes:
            assert name in names, f"{name} not in the wheel"
            return z.read(name)

        sources = sorted((ROOT / "bpf").glob("*.[ch]"))
        themes = sorted((ROOT / "themes").glob("*.toml"))
        assert any(p.suffix == ".c" for p in sources) and any(p.suffix == ".h" for p in sources)
        assert len(themes) >= 4
        for p in sources:
            assert read(f"flowtop/bpf/{p.name}") == p.read_bytes()
        for p in themes:
            assert read(f"flowtop/themes/{p.name}") == p.read_bytes()
        tcss = ROOT / "flowtop" / "tui" / "flowtop.tcss"
        assert read("flowtop/tui/flowtop.tcss") == tcss.read_bytes()
        # Nothing lands outside the package but the metadata and the data under share/.
        top = {n.split("/")[0] for n in names}
        assert top == {"flowtop", f"flowtop-{__version__}.dist-info", f"flowtop-{__version__}.data"}
        data = f"flowtop-{__version__}.data/data/share/"
        assert {n for n in names if n.startswith(data)} == {
            data + rel for rel in (*SHARE, "flowtop/flowtop.service", "flowtop/flowtop.toml")
        }
        for rel in ("flowtop/flowtop.service", "flowtop/flowtop.toml"):
            assert read(data + rel) == (ROOT / "contrib" / Path(rel).name).read_bytes()
        man = read(data + "man/man1/flowtop.1").decode()
        bash = read(data + "bash-completion/completions/flowtop").decode()
        zsh = read(data + "zsh/site-functions/_flowtop").decode()

    # Generated from the argument parser: every subcommand and long option is in them.
    parser = build_parser()
    assert man.startswith('.TH FLOWTOP "1"'), man[:200]
    assert "flowtop \\- " + str(parser.description).replace("-", "\\-") in man
    subs = _subcommands(parser)
    assert set(subs) >= {"dump", "doctor", "detach"}
    for name, sub in subs.items():
        assert f"flowtop {name}" in man
        for opt in _long_options(sub) - {"--help"}:
            assert opt.replace("-", "\\-") in man, opt
            assert opt in bash and opt in zsh, opt
    for opt in _long_options(parser) - {"--help"}:
        assert opt.replace("-", "\\-") in man, opt
        assert opt in bash and opt in zsh, opt
    assert zsh.startswith("#compdef flowtop\n")
    assert re.search(r"^complete .*-F _shtab_flowtop flowtop$", bash, re.M)


def test_editable_install_finds_the_top_level_folders(
    source: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # What scripts/setup.sh does for the checkout: setuptools' editable finder maps the
    # modules only, so flowtop.resources falls back to the folders next to the package.
    venv = tmp_path_factory.mktemp("editable") / "venv"
    away = venv.parent
    try:
        run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], away)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        run([*pip, "install", "-q", "--no-deps", "-e", str(source)], away, timeout=300)
        probe = (
            "import flowtop, flowtop.resources as r\n"
            "print(flowtop.__file__); print(r.bpf_dir()); print(r.themes_dir())"
        )
        out = run([str(venv / "bin" / "python"), "-c", probe], away).stdout.split("\n")
        assert out[:3] == [
            str(source / "flowtop" / "__init__.py"),
            str(source / "bpf"),
            str(source / "themes"),
        ]
    finally:
        shutil.rmtree(away, ignore_errors=True)


# --------------------------------------------------------------------------- #
# make install
# --------------------------------------------------------------------------- #


def test_make_install_lays_out_venv_links_unit_and_config(installed: Install) -> None:
    venv = installed.venv
    # flowtop's code and data come from the wheel in the new venv, bcc from Debian.
    probe = (
        "import bcc, flowtop, flowtop.resources as r, flowtop.tui.themes as t\n"
        "print(flowtop.__file__); print(r.bpf_dir()); print(t.theme_dir()); print(bcc.__file__)"
    )
    out = run([str(venv / "bin" / "python"), "-c", probe], installed.away).stdout.split("\n")
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    pkg = site / "site-packages" / "flowtop"
    assert out[0] == str(pkg / "__init__.py")
    assert out[1] == str(pkg / "bpf") and (pkg / "bpf" / "tc.c").is_file()
    assert out[2] == str(pkg / "themes")
    assert out[3].startswith("/usr/lib/python3/dist-packages/bcc/")
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "pyvenv.cfg").read_text().count("home = /usr/bin") == 1

    version = run([str(installed.flowtop), "--version"], installed.away).stdout.strip()
    assert version == f"flowtop {__version__}"

    # Links where PATH, man, bash-completion and zsh look, to the final (non-DESTDIR) paths.
    links = {f"{BINDIR}/flowtop": f"{PREFIX}/bin/flowtop"}
    links |= {f"{DATADIR}/{rel}": f"{PREFIX}/share/{rel}" for rel in SHARE}
    for link, target in links.items():
        assert os.readlink(installed.path(link)) == target
        assert installed.path(target).is_file()

    unit = installed.path(UNIT)
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    execs = re.findall(r"^ExecStart=(\S+) (.*)$", unit.read_text(), re.M)
    assert execs == [(f"{BINDIR}/flowtop", f"--export-only --config {CONFIG}")]
    assert os.readlink(installed.path(execs[0][0])) == f"{PREFIX}/bin/flowtop"

    config = installed.path(CONFIG)
    st = config.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert config.read_bytes() == (ROOT / "contrib" / "flowtop.toml").read_bytes()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_unit_verifies(installed: Install, tmp_path: Path) -> None:
    # verify also checks that ExecStart's command exists: point it into DESTDIR.
    text = installed.path(UNIT).read_text()
    final = f"ExecStart={BINDIR}/flowtop "
    assert text.count(final) == 1
    unit = tmp_path / "flowtop.service"
    unit.write_text(text.replace(final, f"ExecStart={installed.flowtop} "))
    proc = run(["systemd-analyze", "verify", str(unit)], installed.away, check=False)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr


def test_make_install_again_keeps_an_edited_config(installed: Install) -> None:
    config = installed.path(CONFIG)
    mine = b"# edited by the admin\n[collector]\ninterval = 2\n"
    config.write_bytes(mine)
    config.chmod(0o640)
    out = make_install(installed.root, installed.wheel, installed.away)
    assert f"config {CONFIG} exists: kept" in out
    assert config.read_bytes() == mine
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert run([str(installed.flowtop), "--version"], installed.away).returncode == 0


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")
def test_man_renders_flowtop_1(installed: Install) -> None:
    page = installed.venv / "share" / "man" / "man1" / "flowtop.1"
    env_man = ["env", f"MANPATH={installed.venv / 'share' / 'man'}", "MANWIDTH=100", "man"]
    assert run([*env_man, "-w", "flowtop"], installed.away).stdout.strip() == str(page)
    text = run([*env_man, "flowtop"], installed.away).stdout
    text = re.sub(r".\x08", "", text)  # overstrike bold/underline, if any
    assert re.match(r"FLOWTOP\(1\)\s+User Commands\s+FLOWTOP\(1\)", text), text[:300]
    assert re.search(r"^NAME\n\s+flowtop - top for network flows", text, re.M), text[:500]
    for heading in ("SYNOPSIS", "OPTIONS", "FILES", "ENVIRONMENT", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), heading
    assert CONFIG in text and "FLOWTOP_BPF_DIR" in text
    for name in _subcommands(build_parser()):
        assert f"flowtop {name}" in text
    assert run(["man", "-l", str(page)], installed.away).returncode == 0


def _bash_complete(script: Path, words: list[str], cwd: Path) -> list[str]:
    """COMPREPLY of the installed bash completion for `words` (the last one is completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    code = (
        f"source '{script}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        f'COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}\n'
        '_shtab_flowtop; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = run(["bash", "--norc", "--noprofile", "-c", code], cwd).stdout
    return sorted(w for w in out.split("\n") if w)


def test_bash_completion_completes_subcommands_options_and_files(installed: Install) -> None:
    share = installed.venv / "share"
    script = share / "bash-completion" / "completions" / "flowtop"
    parser = build_parser()
    subs = _subcommands(parser)
    assert _bash_complete(script, ["flowtop", "d"], installed.away) == sorted(
        n for n in subs if n.startswith("d")
    )
    assert _bash_complete(script, ["flowtop", "dump", "--js"], installed.away) == ["--json"]
    assert _bash_complete(script, ["flowtop", "--rep"], installed.away) == ["--replay"]
    # --replay completes file names
    (installed.away / "capture.rec").write_bytes(b"")
    got = _bash_complete(script, ["flowtop", "--replay", "capt"], installed.away)
    assert got == ["capture.rec"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_finds_the_completion_in_site_functions(installed: Install) -> None:
    # Running a zsh completion needs an interactive line editor; this checks that the file
    # parses and that compinit, given the directory in fpath, binds it to flowtop.
    functions = installed.venv / "share" / "zsh" / "site-functions"
    run(["zsh", "-n", str(functions / "_flowtop")], installed.away)
    code = (
        f"fpath=({functions} $fpath); autoload -U compinit; compinit -u -D; "
        'print -r -- "$_comps[flowtop]"'
    )
    assert run(["zsh", "-f", "-c", code], installed.away).stdout == "_flowtop\n"


# --------------------------------------------------------------------------- #
# the installed flowtop at work
# --------------------------------------------------------------------------- #


class CleanTmux(Tmux):
    """tests/tui's tmux driver, started with clean_env() (an explicit environment)."""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=check,
            env=clean_env(),
        )


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = CleanTmux(f"ftt-{os.getpid()}-pkg")
    try:
        yield t
    finally:
        t.kill()
        # kill-server leaves the socket file behind
        tmpdir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (tmpdir / t.socket).unlink(missing_ok=True)


def _send_udp(pair: netns.Pair, count: int, payload: int, sport: int, dport: int) -> None:
    with netns.entered(pair.a.name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("10.200.1.1", sport))
        for _ in range(count):
            s.sendto(b"p" * payload, ("10.200.1.2", dport))
    finally:
        s.close()


@pytest.mark.kernel
@needs_root
def test_installed_doctor_passes(installed: Install) -> None:
    proc = run([str(installed.flowtop), "doctor"], installed.away, check=False)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert lines and all(re.match(r"(OK|WARN|FAIL) +[\w ]+: ", line) for line in lines), lines
    assert not [line for line in lines if line.startswith("FAIL")]
    checks = {line.split(":")[0].split(None, 1)[1]: line for line in lines}
    assert checks["bcc import"].startswith("OK")
    assert "/usr/lib/python3/dist-packages/bcc" in checks["bcc import"]
    assert checks["bcc compile"].startswith("OK")


@pytest.mark.kernel
@needs_root
def test_installed_dump_counts_traffic_in_a_namespace(
    installed: Install, quiet_pair: netns.Pair
) -> None:
    pair = quiet_pair
    count, payload, sport, dport = 100, 472, 40111, 5301
    before = pair.a.link_stats("va")
    proc = pair.a.popen(
        [str(installed.flowtop), "dump", "-i", "va", "--duration", "2", "--json"],
        cwd=installed.away,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    err: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if READY_MARK in line:
                ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), f"dump not attached within 60 s: {''.join(err)}"
        _send_udp(pair, count, payload, sport, dport)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    reader.join(5)
    assert proc.returncode == 0, "".join(err)
    after = pair.a.link_stats("va")
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    result = DumpResult(pair.a.name, proc.returncode, stdout, "".join(err), records)
    flow = result.flow(
        iface="va", direction="egress", proto=17, src="10.200.1.1", dst="10.200.1.2",
        sport=sport, dport=dport,
    )  # fmt: skip
    assert flow is not None, stdout
    assert (flow["packets"], flow["bytes"]) == (count, count * (payload + 28))
    sent = after["tx_packets"] - before["tx_packets"]
    assert sent == count  # the quiet pair carried nothing else
    assert result.iface("va")["tx_packets"] == sent
    assert result.stats["lost_packets"] == 0


def _row(screen: str, sport: int, dport: int) -> list[str] | None:
    """The last cells of the flow's row: rate, pkt/s, total, pkts (a Process
    column may come before them: the sender is a local socket)."""
    m = re.search(
        rf"10\.200\.1\.1\s+{sport}\s+10\.200\.1\.2\s+{dport}\s+udp\s+out\s+va\s+(.*)$",
        screen,
        re.M,
    )
    return m.group(1).split()[-4:] if m else None


def _wait_row(tmux: Tmux, sport: int, dport: int, want: list[str], timeout: float) -> str:
    """Waits until the flow's row shows `want` as its total and packets cells."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.capture()
        row = _row(screen, sport, dport)
        if row is not None and row[2:4] == want:
            return screen
        time.sleep(0.2)
    size = tmux.run("display", "-p", "-t", tmux.session, "#{window_width}x#{window_height}")
    raise AssertionError(
        f"row with {want} not on screen ({size.stdout.strip()}) within {timeout} s:\n{screen}"
    )


def _flow_view(tmux: Tmux) -> None:
    """g f: the flow view (the live view opens on conversations), one row per flow."""
    tmux.run("send-keys", "-t", tmux.session, "g")
    time.sleep(0.3)
    tmux.run("send-keys", "-t", tmux.session, "f")
    deadline = time.monotonic() + 10
    while "by flow" not in tmux.capture():
        assert time.monotonic() < deadline, tmux.capture()
        time.sleep(0.2)


def _quit(tmux: Tmux, exit_file: Path) -> str:
    tmux.run("send-keys", "-t", tmux.session, "q")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not exit_file.exists():
        time.sleep(0.1)
    assert exit_file.exists(), tmux.capture()
    return exit_file.read_text().strip()


@pytest.mark.kernel
@needs_root
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_installed_flowtop_records_live_and_replays_in_tmux(
    installed: Install, quiet_pair: netns.Pair, tmux: Tmux
) -> None:
    pair = quiet_pair
    count, payload, sport, dport = 200, 972, 40222, 5302
    # 200 packets of 1000 IP bytes: 1.60 Mb in total (the view counts bits by default).
    want = ["1.60Mb", "200"]
    rec = installed.away / "capture.flowtop"
    done = installed.away / "record.exit"
    flowtop = installed.flowtop
    record = (
        f"cd {installed.away} && ip netns exec {pair.a.name} {flowtop} -i va -d 1 "
        f"--no-resolve --record {rec}; echo EXIT=$? > {done}"
    )
    session = ["-x", "160", "-y", "48", "-e", "TERM=xterm-256color"]
    tmux.run("new-session", "-d", "-s", tmux.session, *session, "sh", "-c", record)
    deadline = time.monotonic() + 60
    while "every 1s" not in tmux.capture():  # BPF compiled and attached
        assert time.monotonic() < deadline, tmux.capture()
        assert tmux.alive(), "flowtop --record exited early"
        time.sleep(0.2)
    _flow_view(tmux)
    _send_udp(pair, count, payload, sport, dport)
    _wait_row(tmux, sport, dport, want, timeout=10)
    assert _quit(tmux, done) == "EXIT=0"
    assert netns.flowtop_filters(pair.a, "va", "ingress") == []
    assert netns.flowtop_filters(pair.a, "va", "egress") == []
    assert rec.stat().st_size > 0

    # The recording played back by the installed flowtop, outside any namespace.
    done = installed.away / "replay.exit"
    replay = f"cd {installed.away} && {flowtop} --replay {rec} --speed 4; echo EXIT=$? > {done}"
    tmux.run("new-session", "-d", "-s", f"{tmux.session}-r", *session, "sh", "-c", replay)
    replay_tmux = CleanTmux(tmux.socket)
    replay_tmux.session = f"{tmux.session}-r"
    deadline = time.monotonic() + 30
    while "by conversation" not in replay_tmux.capture():  # the replay's view is up
        assert time.monotonic() < deadline, replay_tmux.capture()
        time.sleep(0.2)
    _flow_view(replay_tmux)
    screen = _wait_row(replay_tmux, sport, dport, want, timeout=30)
    assert "va" in screen
    assert _quit(replay_tmux, done) == "EXIT=0"
