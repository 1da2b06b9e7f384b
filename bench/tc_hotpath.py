"""The TC program's hot path in isolation: BPF_PROG_TEST_RUN of flowtop_ingress
on crafted frames against an empty program, no network, no namespace.

Each frame is run `--repeat` times in a row (the kernel's own loop; it
reports the mean ns per run), so after the first run the flow is in its
cache slot and everything the program touches is in the CPU's caches: the
figure is the instruction cost of the established-flow path, without the
cache misses a lightly loaded link adds (bench/kernel_cost.py measures
those, on real traffic). The empty program (`return -1`) gives the test
loop's own cost; flowtop minus empty is the program's marginal cost.

What it does not show: the cost of cold code, branch history and maps on
a real link. A change can leave this figure alone and still move
kernel_cost's by several per cent either way (branch layout, the order of
independent work), so it is for instruction counts; decide with
kernel_cost --compare, both ways round.

Frames: UDP/IPv4, UDP/IPv6, a TCP/IPv4 ACK with timestamps (the passive RTT
path), each an established flow after its first run. With --compare DIR,
a second build (a copy of bpf/ with a change; see kernel_cost.py --compare)
is run on the same frames, the builds interleaved round by round (order
alternating), and compare/flowtop reported per frame. Also printed per
build: verified_insns and xlated/jited sizes (struct bpf_prog_info), what
the first start pays the verifier for.

Run: .venv/bin/python bench/tc_hotpath.py [--rounds 15] [--repeat 1000000]
[--compare DIR]   (root; ~30 s). Informational: no target of its own.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import os
import struct
import sys
import time
from typing import Any

import _common as C

EMPTY_SRC = b"int empty(struct __sk_buff *skb) { return -1; }\n"

MAC = bytes.fromhex("020000000001") + bytes.fromhex("020000000002")


def _csum(b: bytes) -> int:
    s = sum(int(w) for w in struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ipv4(proto: int, l4: bytes) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
        bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2]),
    )  # fmt: skip
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return MAC + b"\x08\x00" + hdr + l4


def frame_udp4() -> bytes:
    payload = b"x" * 1000
    return _ipv4(17, struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload)


def frame_udp6() -> bytes:
    payload = b"x" * 1000
    udp = struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload
    src = bytes.fromhex("fd00000000000000000000000000000" + "1")
    dst = bytes.fromhex("fd00000000000000000000000000000" + "2")
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, src, dst)
    return MAC + b"\x86\xdd" + ip6 + udp


def frame_tcp4() -> bytes:
    # ACK with 100 bytes of payload and the timestamp option (NOP NOP TS).
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", 1000, 900)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 12345, 6789, (8 << 4), 0x10, 65535, 0, 0)
    return _ipv4(6, tcp + opts + b"y" * 100)


FRAMES = (("udp4", frame_udp4), ("udp6", frame_udp6), ("tcp4", frame_tcp4))


def _attr(fd: int, buf: Any, size: int, repeat: int) -> Any:
    """union bpf_attr for BPF_PROG_TEST_RUN: prog_fd, data_size_in, data_in, repeat."""
    attr = ct.create_string_buffer(80)
    struct.pack_into("=III", attr, 0, fd, 0, size)
    struct.pack_into("=Q", attr, 16, ct.addressof(buf))
    struct.pack_into("=I", attr, 32, repeat)
    return attr


def test_run(fd: int, data: bytes, repeat: int) -> tuple[int, float]:
    """(retval, mean ns per run) of BPF_PROG_TEST_RUN over data, repeat times:
    the syscall's wall time over repeat (the kernel's own figure is whole ns;
    the syscall's fixed cost is a few microseconds, nothing over 1e6 runs)."""
    from flowtop.kernel import bpfsys

    buf = ct.create_string_buffer(data, len(data))
    attr = _attr(fd, buf, len(data), repeat)
    t0 = time.perf_counter_ns()
    bpfsys.bpf(bpfsys.BPF_PROG_TEST_RUN, attr)
    ns = (time.perf_counter_ns() - t0) / repeat
    return struct.unpack_from("=I", attr, 4)[0], ns


def prog_info(fd: int) -> dict[str, int]:
    """verified_insns, bytes_xlated, bytes_jited of one program (struct
    bpf_prog_info: jited/xlated_prog_len at 16/20, verified_insns at 216)."""
    from flowtop.kernel import bpfsys

    info = bpfsys.obj_info(fd, 232)
    jited, xlated = struct.unpack_from("=II", info, 16)
    return {
        "verified_insns": struct.unpack_from("=I", info, 216)[0],
        "bytes_xlated": xlated,
        "bytes_jited": jited,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="rounds per frame (default 15)")
    ap.add_argument("--repeat", type=int, default=1_000_000, help="runs per test (default 1e6)")
    ap.add_argument("--compare", metavar="DIR", help="a second build, of the BPF sources in DIR")
    return ap.parse_args(argv)


def measure(fds: dict[str, int], rounds: int, repeat: int) -> dict[str, dict[str, list[float]]]:
    """frame -> build -> ns per run of each round, the builds' order rotating."""
    names = list(fds)
    res: dict[str, dict[str, list[float]]] = {f: {n: [] for n in names} for f, _ in FRAMES}
    for fname, make in FRAMES:
        data = make()
        for n in names:
            test_run(fds[n], data, 1000)  # warm: the flow takes its slot
        for i in range(rounds):
            k = i % len(names)
            for n in names[k:] + names[:k]:
                _, ns = test_run(fds[n], data, repeat)
                res[fname][n].append(ns)
    return res


def report(res: dict[str, dict[str, list[float]]], infos: dict[str, dict[str, int]]) -> None:
    """Per frame and build: the fastest round (the cost itself; other load on
    the machine only adds) and the median, each minus the empty program's."""
    rows = []
    for fname, by in res.items():
        e_min, e_med = min(by["empty"]), C.median(by["empty"])
        ft = min(by["flowtop"]) - e_min
        for n, xs in by.items():
            lo, med = min(xs), C.median(xs)
            rows.append(
                (fname, n, f"{lo:.1f}", f"{med:.1f}", f"{lo - e_min:.1f}", f"{med - e_med:.1f}",
                 f"{(lo - e_min) / ft:.3f}" if n != "empty" else "")
            )  # fmt: skip
    heads = ("frame", "build", "min ns", "median ns", "min - empty", "median - empty",
             "marginal (min) vs flowtop")  # fmt: skip
    print(C.table(rows, heads))
    print()
    irows = [
        (n, i["verified_insns"], i["bytes_xlated"], i["bytes_jited"]) for n, i in infos.items()
    ]
    print(C.table(irows, ("build (ingress)", "verified_insns", "bytes_xlated", "bytes_jited")))


def main() -> int:
    args = parse_args()
    if args.rounds < 1 or args.repeat < 1:
        raise SystemExit("tc_hotpath: --rounds and --repeat must be >= 1")
    if args.compare and not os.path.isfile(os.path.join(args.compare, "tc.c")):
        raise SystemExit(f"tc_hotpath: no tc.c in {args.compare}")
    C.require_root()
    import bcc

    from flowtop.kernel.program import ProgramOptions, TcProgram

    built: list[Any] = []
    empty = None
    try:
        empty = bcc.BPF(text=EMPTY_SRC)
        fds = {"empty": empty.load_func(b"empty", bcc.BPF.SCHED_CLS).fd}
        built.append(TcProgram(ProgramOptions()))
        fds["flowtop"] = built[0].ingress.fd
        if args.compare:
            from kernel_cost import compare_build

            built.append(TcProgram(ProgramOptions(), build=compare_build(args.compare)))
            fds["compare"] = built[1].ingress.fd
        for n, fd in fds.items():
            ret, _ = test_run(fd, frame_udp4(), 1)
            if n != "empty" and ret != 0xFFFFFFFF:
                raise SystemExit(f"tc_hotpath: {n} returned {ret}, not TC_ACT_UNSPEC")
        infos = {n: prog_info(fd) for n, fd in fds.items() if n != "empty"}
        res = measure(fds, args.rounds, args.repeat)
    finally:
        for tc in built:
            tc.close()
        if empty is not None:
            empty.cleanup()
    print(
        f"TC hot path: BPF_PROG_TEST_RUN, {args.repeat} runs a test, {args.rounds} rounds, "
        "fastest round and median (established flow, warm caches)\n"
    )
    report(res, infos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
