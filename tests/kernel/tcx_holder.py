"""A stand-in flowtop for the TCX tests: flowtop's own TC programs attached to
one interface with TcxAttacher, held until SIGTERM (or SIGKILL).

    python tests/kernel/tcx_holder.py IFNAME [--fork-child] [--spawn]

Run inside the test namespace (`ip netns exec`). Prints one JSON line when
attached: {"pid", "links": [link ids], "progs": [prog ids], "cloexec": [...],
"child": pid of a child forked without exec (--fork-child; it inherits the
link fds and sleeps), "spawned": pid of `sleep` started with
subprocess.Popen(close_fds=False) (--spawn; only O_CLOEXEC keeps the link
fds from it)}. On SIGTERM it prints {"ingress": packets, "egress": packets}
(its programs' counters for the interface), detaches, closes and exits 0.

Stays until the CLI has `--attach tcx` (then `flowtop dump` does this).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time


def main() -> int:
    from flowtop.kernel import layout
    from flowtop.kernel.program import ProgramOptions, TcProgram
    from flowtop.kernel.tcx import TcxAttacher

    ifname = sys.argv[1]
    ifindex = socket.if_nametoindex(ifname)
    stop = {"flag": False}

    def on_term(_sig: int, _frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    prog = TcProgram(ProgramOptions())
    attacher = TcxAttacher({("ingress", False): prog.ingress.fd, ("egress", False): prog.egress.fd})
    prog.reset_iface(ifindex)
    att = attacher.attach(ifindex, ifname)
    ready: dict[str, object] = {
        "pid": os.getpid(),
        "links": [link.link_id for link in att.links],
        "progs": [link.prog_id for link in att.links],
        "cloexec": [
            bool(fcntl.fcntl(link.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for link in att.links
        ],
    }
    if "--fork-child" in sys.argv:
        child = os.fork()
        if child == 0:  # no exec: keeps copies of every fd, the link fds too
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(120)
            os._exit(0)
        ready["child"] = child
    if "--spawn" in sys.argv:
        spawned = subprocess.Popen(["sleep", "120"], close_fds=False)
        ready["spawned"] = spawned.pid
    print(json.dumps(ready), flush=True)
    while not stop["flag"]:
        time.sleep(0.05)
    counts = prog.iface_counters([ifindex])
    v4 = layout.FAMILIES.index("ipv4")
    print(
        json.dumps(
            {
                "ingress": counts.get((ifindex, layout.DIR_INGRESS, v4), (0, 0))[0],
                "egress": counts.get((ifindex, layout.DIR_EGRESS, v4), (0, 0))[0],
            }
        ),
        flush=True,
    )
    attacher.detach_all()
    attacher.close()
    prog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
