"""`flowtop doctor`: check what flowtop needs from this machine, one line per check.

Each line is `OK    <check>: <detail>`, `WARN  <check>: <detail>` (something optional is
missing) or `FAIL  <check>: <detail> -> fix: <how>` (flowtop cannot run). Nothing here
raises for an expected failure; the exit code is 0 when no check failed.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39

SETUP_FIX = "run `make setup` in the flowtop repository"
CLSACT_CONFIG = ("CONFIG_NET_SCH_INGRESS", "CONFIG_NET_CLS_BPF", "CONFIG_NET_CLS_ACT")
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# A SCHED_CLS program that only includes a UAPI header: proves that headers, clang and the
# verifier work, without attaching to any interface.
PROBE_PROGRAM = b"""
#include <uapi/linux/bpf.h>
int flowtop_doctor_probe(struct __sk_buff *skb) { return -1; }
"""


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one check."""

    level: str  # "OK", "WARN" or "FAIL"
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level:<6}{self.check}: {_one_line(self.detail)}"
        return f"{text} -> fix: {_one_line(self.fix)}" if self.fix else text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def ok(check: str, detail: str) -> Result:
    return Result("OK", check, detail)


def warn(check: str, detail: str, fix: str = "") -> Result:
    return Result("WARN", check, detail, fix)


def fail(check: str, detail: str, fix: str) -> Result:
    return Result("FAIL", check, detail, fix)


def check_privileges() -> Iterator[Result]:
    if os.geteuid() == 0:
        yield ok("privileges", "running as root")
        return
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.MULTILINE)
    caps = int(match.group(1), 16) if match else 0
    can_bpf = caps & (1 << CAP_BPF | 1 << CAP_SYS_ADMIN)
    if can_bpf and caps & (1 << CAP_NET_ADMIN):
        yield ok("privileges", "not root, but CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN")
    else:
        why = "not root and missing CAP_BPF (or CAP_SYS_ADMIN) + CAP_NET_ADMIN"
        yield fail("privileges", why, "run as root (sudo flowtop ...)")


def _bpftool() -> str | None:
    found = shutil.which("bpftool")
    candidates = [found] if found else ["/usr/sbin/bpftool", "/sbin/bpftool"]
    return next((p for p in candidates if os.access(p, os.X_OK)), None)


def check_kernel() -> Iterator[Result]:
    uname = os.uname()
    yield ok("kernel", f"{uname.release} ({uname.machine})")
    name = "bpf program types"
    bpftool = _bpftool()
    if bpftool is None:
        yield warn(name, "bpftool not found, not probed", "apt-get install bpftool")
        return
    cmd = [bpftool, "-j", "feature", "probe", "kernel"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        yield warn(name, f"cannot run bpftool: {exc}")
        return
    report: Any = None
    try:
        report = json.loads(proc.stdout)
        types = report["program_types"]
    except (ValueError, KeyError, TypeError):
        # bpftool -j reports its own errors as {"error": "..."} on stdout.
        why = report.get("error") if isinstance(report, dict) else None
        why = why or (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        yield warn(name, f"`bpftool feature probe` failed: {why}")
        return
    if not types.get("have_sched_cls_prog_type"):
        why = "sched_cls (TC) programs not supported by this kernel"
        yield fail(name, why, "use a kernel with CONFIG_BPF_SYSCALL and CONFIG_NET_CLS_BPF")
    elif not types.get("have_sock_ops_prog_type"):
        yield warn(name, "sched_cls available; sock_ops missing (no TCP RTT)")
    else:
        yield ok(name, "sched_cls and sock_ops available")


def _kernel_config() -> dict[str, str] | None:
    """The running kernel's build config, or None when it cannot be read."""
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{os.uname().release}")):
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("latin-1")
        except (OSError, EOFError):
            continue
        pairs = (line.partition("=") for line in text.splitlines())
        return {key: value for key, sep, value in pairs if sep and key.startswith("CONFIG_")}
    return None


def check_clsact() -> Iterator[Result]:
    # Probing by creating a qdisc would need an interface; the build config is enough.
    config = _kernel_config()
    if config is None:
        yield warn("clsact", "kernel config not readable (/proc/config.gz, /boot), not probed")
        return
    missing = [opt for opt in CLSACT_CONFIG if config.get(opt) not in ("y", "m")]
    if missing:
        fix = "use a kernel with clsact and cls_bpf (" + ", ".join(CLSACT_CONFIG) + ")"
        yield fail("clsact", f"kernel built without {', '.join(missing)}", fix)
    else:
        yield ok("clsact", ", ".join(CLSACT_CONFIG) + " set")


def check_attach() -> Iterator[Result]:
    """Which attachment `--attach auto` (the default) will use, and why."""
    from flowtop.kernel.tcx import tcx_links, tcx_supported

    has_tcx, why = tcx_supported()
    if has_tcx:
        yield ok("attach", f"auto uses TCX links ({why}); --attach tc for clsact")
        held = tcx_links()
        if held:
            names = ", ".join(sorted({f"{f.ifname} {f.direction}" for f in held}))
            yield ok("tcx links", f"{len(held)} flowtop TCX link(s) held now: {names}")
    else:
        yield ok("attach", f"auto uses clsact with cls_bpf filters ({why})")


def _headers_release(build: Path) -> str:
    """The kernel release a headers tree was built for, from utsrelease.h or its name."""
    try:
        text = (build / "include/generated/utsrelease.h").read_text()
    except OSError:
        text = ""
    match = re.search(r'UTS_RELEASE\s+"([^"]+)"', text)
    return match.group(1) if match else build.resolve().name.removeprefix("linux-headers-")


def check_headers() -> Iterator[Result]:
    name = "kernel headers"
    release = os.uname().release
    build = Path(f"/lib/modules/{release}/build")
    if not build.is_dir():
        if Path("/sys/kernel/kheaders.tar.xz").exists():
            yield warn(name, f"{build} missing; bcc uses /sys/kernel/kheaders.tar.xz")
        else:
            yield fail(name, f"{build} missing or a dangling link", SETUP_FIX)
        return
    headers = _headers_release(build)
    if headers == release:
        yield ok(name, f"{build} matches the running kernel")
    else:
        yield warn(
            name,
            f"fallback headers {headers} in use for kernel {release} (UAPI-only programs);"
            f" {build} -> {build.resolve()}",
        )


def check_bcc_import() -> Iterator[Result]:
    from flowtop.kernel.compiler import load_bcc

    try:
        bcc = load_bcc()
    except Exception as exc:  # ImportError, or OSError when libbcc.so is missing
        fix = f"{SETUP_FIX} (links Debian's python3-bpfcc into .venv)"
        yield fail("bcc import", f"import bcc failed: {exc}", fix)
        return
    version = getattr(bcc, "__version__", "?")
    yield ok("bcc import", f"bcc {version} from {Path(bcc.__file__).parent}")


def _compile_probe() -> tuple[str | None, list[str]]:
    """Compile and load PROBE_PROGRAM; (error or None, what bcc wrote to stderr)."""
    from flowtop.kernel.compiler import load_bcc

    BPF = load_bcc().BPF

    # clang and libbpf write diagnostics to fd 2: keep them out of the report.
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(err.fileno(), 2)
        try:
            b = BPF(text=PROBE_PROGRAM)
            try:
                b.load_func(b"flowtop_doctor_probe", BPF.SCHED_CLS)
            finally:
                b.cleanup()
            failure = None
        except Exception as exc:  # bcc raises plain Exception
            failure = str(exc) or type(exc).__name__
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        return failure, err.read().decode(errors="replace").splitlines()


def check_bcc_compile() -> Iterator[Result]:
    from flowtop.kernel.compiler import load_bcc

    try:
        load_bcc()
    except Exception:
        yield fail("bcc compile", "skipped: bcc is not importable", SETUP_FIX)
        return
    failure, messages = _compile_probe()
    if failure is None:
        yield ok("bcc compile", "compiled and loaded a SCHED_CLS test program")
        return
    first_error = next((m for m in messages if "error" in m.lower()), "")
    detail = f"{failure}: {first_error}" if first_error else failure
    yield fail("bcc compile", detail, "run as root; see the kernel headers line")


def check_mounts() -> Iterator[Result]:
    lines = Path("/proc/mounts").read_text().splitlines()
    mounts = [(f[1], f[2]) for f in map(str.split, lines) if len(f) >= 3]
    fstype = dict(mounts)  # the last mount on a point is the visible one
    if fstype.get("/sys/fs/bpf") == "bpf":
        yield ok("bpffs", "mounted at /sys/fs/bpf")
    else:
        yield warn("bpffs", "not mounted at /sys/fs/bpf", "mount -t bpf bpf /sys/fs/bpf")
    tracefs = [d for d in TRACEFS_DIRS if fstype.get(d) == "tracefs"]
    if tracefs:
        yield ok("tracefs", f"mounted at {tracefs[0]}")
    else:
        why = "not mounted; tracepoints (TCP retransmits) unavailable"
        yield warn("tracefs", why, "mount -t tracefs tracefs /sys/kernel/tracing")
    cgroup2 = [point for point, kind in mounts if kind == "cgroup2"]
    if cgroup2:
        yield ok("cgroup v2", f"mounted at {cgroup2[0]}")
    else:
        why = "no cgroup2 mount; sock_ops (TCP RTT) cannot attach"
        yield warn("cgroup v2", why, "mount -t cgroup2 none /sys/fs/cgroup/unified")


def check_tcp_health() -> Iterator[Result]:
    if Path("/sys/kernel/btf/vmlinux").is_file():
        yield ok("kernel btf", "/sys/kernel/btf/vmlinux (sock_ops reads the RTT variance)")
    else:
        yield warn(
            "kernel btf",
            "no /sys/kernel/btf/vmlinux; local TCP RTT variance is reported as 0",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    tp = [Path(d, "events/tcp/tcp_retransmit_skb") for d in TRACEFS_DIRS]
    if any(p.is_dir() for p in tp):
        yield ok("tcp tracepoint", "tcp:tcp_retransmit_skb available (retransmit events)")
    else:
        yield warn(
            "tcp tracepoint",
            "tcp:tcp_retransmit_skb not found; local retransmits come from sock_ops only",
            "mount -t tracefs tracefs /sys/kernel/tracing",
        )


def check_enrichment() -> Iterator[Result]:
    from flowtop.enrich.geo import KIND_ASN, KIND_CITY, find_default

    for kind, what, option in (
        (KIND_ASN, "ASN", "--geoip-asn"),
        (KIND_CITY, "City", "--geoip-city"),
    ):
        path = find_default(kind)
        if path is None:
            yield warn(
                f"geoip {kind}",
                f"no {what} database in /usr/share/GeoIP or /var/lib/GeoIP; "
                f"{what} enrichment needs {option} PATH",
                "install GeoLite2 databases (geoipupdate) or pass the path",
            )
            continue
        try:
            from flowtop.enrich.geo import MmdbDatabase

            db = MmdbDatabase(path, kind)
            detail = f"{path}"
            db.close()
            yield ok(f"geoip {kind}", detail)
        except Exception as exc:
            yield warn(f"geoip {kind}", f"{path}: {exc}; {what} enrichment disabled", "replace it")


def check_program_cache() -> Iterator[Result]:
    from flowtop.config import load
    from flowtop.kernel import progcache

    # a bad config file is the run's error to report, not this line's
    with contextlib.suppress(Exception):
        progcache.configure(load(None).collector.program_cache)
    d = progcache.cache_dir(create=False)
    where = os.environ.get(progcache.DIR_ENV) or progcache.DEFAULT_DIR
    if d is None and progcache.enabled() and not os.path.lexists(where):
        yield ok("program cache", f"in use: {where} (created at the first start), 0 entries")
        return
    if d is None:
        yield warn(
            "program cache",
            f"not in use ({where}: off, missing, or not owned by root and private); "
            "every start compiles",
            "[collector] program_cache = true, and a root-owned 0700 directory",
        )
        return
    yield ok("program cache", f"in use: {d}, {len(progcache.entries(d))} entries")


def check_quic_names() -> Iterator[Result]:
    from flowtop.wirenames.quic import crypto_available

    if crypto_available():
        yield ok("quic names", "cryptography installed: QUIC Initials' server names are read")
    else:
        yield warn(
            "quic names",
            "the cryptography package is missing: QUIC Initials are counted (quic_off), not named",
            "pip install cryptography",
        )


CHECKS: tuple[Callable[[], Iterator[Result]], ...] = (
    check_privileges,
    check_kernel,
    check_clsact,
    check_attach,
    check_headers,
    check_bcc_import,
    check_bcc_compile,
    check_mounts,
    check_tcp_health,
    check_enrichment,
    check_program_cache,
    check_quic_names,
)


def run_doctor(out: TextIO = sys.stdout) -> int:
    """Print one line per check to `out`; return 0 when flowtop can run here, else 1."""
    failed = False
    for check in CHECKS:
        try:
            results = list(check())
        except Exception as exc:  # a check must never end the report with a traceback
            name = check.__name__.removeprefix("check_")
            results = [fail(name, f"check crashed: {type(exc).__name__}: {exc}", "report a bug")]
        for result in results:
            failed |= result.level == "FAIL"
            print(result.line(), file=out, flush=True)
    return 1 if failed else 0
