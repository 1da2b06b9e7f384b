"""Network impairments for the TCP health tests: loss and queueing delay.

There is no netem here. Loss comes from nftables (`numgen random` drops in a
namespace's forward or output path); delay comes from shaping (an htb class
with a deep queue fills under a bulk transfer, so its backlog is the delay).
Everything lives inside the test's namespaces and goes with them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from .netns import Netns, Port, Router, veth

TABLE = "ftt_impair"


def _nft(ns: Netns, script: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(script)
        f.flush()
        ns.exec("nft", "-f", f.name)


@contextmanager
def loss(
    ns: Netns,
    percent: int,
    daddr: str | None = None,
    hook: str = "forward",
    proto: str = "tcp",
) -> Iterator[None]:
    """Drop `percent` % of the `proto` packets in `hook` of ns (to daddr only when given).

    Removes its table on exit; another call replaces the rule.
    """
    if not 0 <= percent <= 100:
        raise ValueError("percent must be 0..100")
    match = f"meta l4proto {proto} "
    if daddr:
        fam = "ip6" if ":" in daddr else "ip"
        match += f"{fam} daddr {daddr} "
    # nft takes `mod 100 < N` for N up to 99 only: 100% is a plain drop.
    pick = "" if percent == 100 else f"numgen random mod 100 < {percent} "
    _nft(
        ns,
        f"""
        table inet {TABLE} {{
          chain {hook} {{
            type filter hook {hook} priority 0; policy accept;
            {match}{pick}counter drop
          }}
        }}
        """,
    )
    try:
        yield
    finally:
        clear(ns)


def dropped(ns: Netns) -> int:
    """Packets the loss rule dropped so far (its nft counter)."""
    out = ns.exec("nft", "list", "table", "inet", TABLE, check=False).stdout
    total = 0
    for line in out.splitlines():
        if "counter packets" in line:
            words = line.split()
            total += int(words[words.index("packets") + 1])
    return total


def clear(ns: Netns) -> None:
    ns.exec("nft", "delete", "table", "inet", TABLE, check=False)


def shape(ns: Netns, dev: str, rate: str, queue_packets: int = 1000) -> None:
    """htb at `rate` on dev's egress with a pfifo of queue_packets: under a bulk
    transfer the queue fills and its backlog (queue / rate) becomes delay."""
    ns.tc("qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10")
    ns.tc(
        "class", "replace", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
        "rate", rate, "ceil", rate, "burst", "15k", "cburst", "15k",
    )  # fmt: skip
    ns.tc(
        "qdisc", "replace", "dev", dev, "parent", "1:10", "handle", "10:",
        "pfifo", "limit", str(queue_packets),
    )  # fmt: skip


def unshape(ns: Netns, dev: str) -> None:
    ns.tc("qdisc", "del", "dev", dev, "root", check=False)


def add_server(r: Router) -> tuple[Netns, Port, Port]:
    """A second server behind the router: router.vr3 10.200.4.1 <-> s2.vs2
    10.200.4.2 (fd00:200:4::/64). The caller deletes the returned namespace."""
    s2 = Netns.create("s2", ipv6=True)
    try:
        pr3, ps2 = veth(
            r.router,
            "vr3",
            s2,
            "vs2",
            "02:00:c8:00:04:01",
            "02:00:c8:00:04:02",
            ip4=("10.200.4.1", "10.200.4.2"),
            ip6=("fd00:200:4::1", "fd00:200:4::2"),
            ipv6=True,
        )
        s2.ip("route", "add", "default", "via", "10.200.4.1")
        s2.ip("-6", "route", "add", "default", "via", "fd00:200:4::1")
        return s2, pr3, ps2
    except BaseException:
        s2.delete()
        raise
