"""TCP health: RTT and retransmit samples joined to flows, and a verdict per
interface and per remote group.

Two sources report TCP connections as layout.TCP_SAMPLE records, cumulative
per connection and sending direction: the sock_ops tracker (sockets on this
host) and the TC program's passive RTT code (anything crossing an attached
hook, forwarded traffic included). join() writes them onto the flow table's
rows by 5-tuple, sock_ops first: it knows the socket's own estimate. The
HealthTracker then keeps a short window per group and says `healthy` or
`degraded`, with a reason that points where the problem is: one remote
group degraded while the others are fine points away from this box; every
destination of an interface degraded points at the local link.

Drops on this box (core/drops.py, add_drops) come before all that: an
interface or remote group whose packets the kernel dropped here within the
window is degraded with a reason that says so and names the reason
("dropped on this box: NETFILTER_DROP, 12 packets"), whatever its RTT and
retransmits say: retransmits caused by a local firewall rule or a missing
route are not the network's fault. Groups with drops and no TCP get a
verdict of their own (UDP dropped by a rule is as dropped).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flowtop.core.drops import group_sums
from flowtop.core.flowindex import FlowIndex, hash_words
from flowtop.core.flowtable import FlowTable
from flowtop.core.thresholds import DEFAULT_THRESHOLDS, Thresholds
from flowtop.kernel import layout
from flowtop.kernel.dropreasons import DropReasons

NS = 1_000_000_000
# Which key members identify a connection: ip_version, proto, the addresses
# and the ports (no ifindex, direction or VLAN: a forwarded connection
# crosses several interfaces).
_MASK = layout.FLOW_KEY_WORDS.mask(("ip_version", "proto", "src", "dst", "sport", "dport"))

# The verdict's thresholds are core/thresholds.py's (config [health], per monitor).
WINDOW = 10.0  # seconds of samples behind the current figures
BASELINE_WINDOW = 300.0  # the baseline is the minimum RTT over this long
HEALTHY = "healthy"
DEGRADED = "degraded"
LOCAL_DROPS = "dropped on this box"  # how a drop verdict's reason begins
_DROP_REASONS_SHOWN = 2  # reasons a verdict names, most packets first
DROP_REMOTES = 256  # remote addresses per interval whose drops reach their groups


def conn_words(words: np.ndarray) -> np.ndarray:
    """Connection identity of key words (layout.FLOW_KEY_WORDS), oriented as given."""
    out: np.ndarray = np.ascontiguousarray(words, dtype=np.uint64) & _MASK
    return out


class _Lookup:
    """Vectorised exact-match lookup of connection words -> record index."""

    def __init__(self, words: np.ndarray) -> None:
        self._words = np.ascontiguousarray(words)
        n = len(words)
        self._index = FlowIndex(max(n, 1))
        if n:
            self._index.insert(hash_words(self._words), np.arange(n), self._words)

    def find(self, words: np.ndarray) -> np.ndarray:
        if len(self._words) == 0 or len(words) == 0:
            return np.full(len(words), -1, dtype=np.int64)
        rows: np.ndarray = self._index.lookup(words, hash_words(words), self._words).astype(
            np.int64
        )
        return rows


@dataclass
class TcpUpdate:
    """What one join changed on flow rows (inputs of the health verdict)."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ifindex: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    fresh_rtt: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    rtt_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    d_retrans: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    d_segs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    d_rto: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    remote: np.ndarray = field(default_factory=lambda: np.zeros(0, "V16"))  # remote address
    remote_ver: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    conn: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # connection id


def _pick(*candidates: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    """First non-negative index of the candidates per row, with its tag."""
    n = len(candidates[0][0])
    idx = np.full(n, -1, dtype=np.int64)
    tag = np.zeros(n, dtype=np.int64)
    for cand, t in candidates:
        take = (idx < 0) & (cand >= 0)
        idx[take] = cand[take]
        tag[take] = t
    return idx, tag


def join(table: FlowTable, samples: np.ndarray | None, now_ns: int) -> TcpUpdate:
    """Writes TCP samples onto the table's live TCP flows; returns what changed.

    A flow takes RTT from the connection record in its own direction or the
    reverse one (RTT belongs to the path), retransmits only from its own
    direction (they belong to the sender). sock_ops wins over passive.
    """
    if samples is None or len(samples) == 0:
        return TcpUpdate()
    live = table.live_rows()
    keys = table.keys_at(live)
    rows = live[keys["proto"] == 6]
    if len(rows) == 0:
        return TcpUpdate()
    w = conn_words(table.words_at(rows))
    rw = layout.FLOW_KEY_WORDS.reversed(w)
    sw = conn_words(layout.FLOW_KEY_WORDS.view(samples["key"]))
    src = samples["source"]
    found: dict[tuple[int, bool], np.ndarray] = {}
    for source in (layout.TCP_SOURCE_SOCKOPS, layout.TCP_SOURCE_PASSIVE):
        sel = np.flatnonzero(src == source)
        look = _Lookup(sw[sel])
        for rev, words in ((False, w), (True, rw)):
            pos = look.find(words)
            found[(source, rev)] = sel[pos] if len(sel) else pos
            found[(source, rev)][pos < 0] = -1
    sock, pas = layout.TCP_SOURCE_SOCKOPS, layout.TCP_SOURCE_PASSIVE
    # RTT: the record that has one, own direction first.
    has_rtt = samples["srtt_us"] > 0
    cands = []
    for source, rev in ((sock, False), (sock, True), (pas, False), (pas, True)):
        f = found[(source, rev)]
        ok = (f >= 0) & has_rtt[np.maximum(f, 0)]
        cands.append((np.where(ok, f, -1), (source << 1) | int(rev)))
    ri, rtag = _pick(*cands)
    # Retransmits: own direction only.
    xi, xtag = _pick((found[(sock, False)], sock), (found[(pas, False)], pas))
    # Any record (for the remote end): own direction first.
    ai, atag = _pick(
        (found[(sock, False)], sock << 1),
        (found[(sock, True)], (sock << 1) | 1),
        (found[(pas, False)], pas << 1),
        (found[(pas, True)], (pas << 1) | 1),
    )
    hit = ai >= 0
    if not hit.any():
        return TcpUpdate()

    old_samples = table.column("rtt_samples", rows)
    old_retr = table.column("retrans", rows).astype(np.int64)
    old_segs = table.column("data_segs", rows).astype(np.int64)
    old_rto = table.column("rto", rows).astype(np.int64)
    had_retr = table.column("retrans_source", rows) > 0

    fresh = np.zeros(len(rows), dtype=bool)
    rtt = np.zeros(len(rows), dtype=np.uint32)
    r = ri >= 0
    if r.any():
        rec = samples[ri[r]]
        rr = rows[r]
        table.set_column("rtt_us", rr, rec["srtt_us"])
        table.set_column("rtt_min_us", rr, rec["min_rtt_us"])
        table.set_column("rtt_source", rr, rtag[r] >> 1)
        table.set_column("rtt_samples", rr, rec["rtt_samples"])
        fresh[r] = rec["rtt_samples"] != old_samples[r]
        rtt[r] = rec["srtt_us"]
    d_retr = np.zeros(len(rows), dtype=np.int64)
    d_segs = np.zeros(len(rows), dtype=np.int64)
    d_rto = np.zeros(len(rows), dtype=np.int64)
    x = xi >= 0
    if x.any():
        rec = samples[xi[x]]
        rx = rows[x]
        new_retr = rec["retrans"].astype(np.int64)
        new_segs = rec["data_segs"].astype(np.int64)
        new_rto = rec["rto"].astype(np.int64)
        # A connection already old when we first saw it: its history is
        # not news, start counting from here.
        first = ~had_retr[x]
        old = table.column("first_ns", rx) + int(WINDOW * NS) < now_ns
        base: np.ndarray = first & old
        d_retr[x] = np.where(base, 0, np.maximum(new_retr - np.where(first, 0, old_retr[x]), 0))
        d_segs[x] = np.where(base, 0, np.maximum(new_segs - np.where(first, 0, old_segs[x]), 0))
        d_rto[x] = np.where(base, 0, np.maximum(new_rto - np.where(first, 0, old_rto[x]), 0))
        table.set_column("retrans", rx, rec["retrans"])
        table.set_column("data_segs", rx, rec["data_segs"])
        table.set_column("rto", rx, rec["rto"])
        table.set_column("retrans_source", rx, xtag[x])

    # The remote end of each row: for a local socket its peer; for passive
    # records the server when the handshake was seen, else the end with the
    # lower port (a service port, most of the time).
    rec = samples[np.maximum(ai, 0)]
    flipped = (atag & 1).astype(bool)
    is_sock = (atag >> 1) == sock
    server = rec["server"]
    sample_dst_remote = np.where(
        is_sock | (server == 1),
        True,
        np.where(server == 2, False, rec["key"]["dport"] <= rec["key"]["sport"]),
    )
    # The sample's dst is the row's dst when matched in the same orientation.
    remote_is_dst = sample_dst_remote != flipped
    k = table.keys_at(rows)
    remote = np.where(remote_is_dst, k["dst"], k["src"])
    return TcpUpdate(
        rows=rows[hit],
        ifindex=k["ifindex"][hit],
        fresh_rtt=fresh[hit],
        rtt_us=rtt[hit],
        d_retrans=d_retr[hit],
        d_segs=d_segs[hit],
        d_rto=d_rto[hit],
        remote=remote[hit],
        remote_ver=k["ip_version"][hit],
        conn=np.where(xi >= 0, xi, -1 - ai)[hit],  # a sender direction, else the record
    )


# -- groups --------------------------------------------------------------------------


def prefix_group(addr: bytes, version: int) -> str:
    """The remote group when nothing better is known: its /24 or /48."""
    if version == 4:
        return str(ipaddress.IPv4Network((addr[:4], 24), strict=False))
    return str(ipaddress.IPv6Network((addr, 48), strict=False))


GroupNamer = Callable[[bytes, int], str]


@dataclass(frozen=True, slots=True)
class HealthGroup:
    scope: str  # "interface" or "remote"
    group: str  # interface name, or AS / label / prefix of the remote end
    verdict: str
    reason: str
    rtt_p50_us: float | None
    rtt_p95_us: float | None
    rtt_baseline_us: float | None
    retransmit_ratio: float | None
    retransmits: int
    data_segments: int
    rto: int

    @property
    def degraded(self) -> bool:
        return self.verdict == DEGRADED

    def as_dict(self) -> dict[str, object]:
        return {
            "type": "health",
            "scope": self.scope,
            "group": self.group,
            "verdict": self.verdict,
            "reason": self.reason,
            "rtt_p50_us": None if self.rtt_p50_us is None else round(self.rtt_p50_us),
            "rtt_p95_us": None if self.rtt_p95_us is None else round(self.rtt_p95_us),
            "rtt_baseline_us": (
                None if self.rtt_baseline_us is None else round(self.rtt_baseline_us)
            ),
            "retransmit_ratio": (
                None if self.retransmit_ratio is None else round(self.retransmit_ratio, 5)
            ),
            "retransmits": self.retransmits,
            "data_segments": self.data_segments,
            "rto": self.rto,
        }


@dataclass
class _Interval:
    t: float
    rtts: np.ndarray
    retrans: int
    segs: int
    rto: int


class _Series:
    """One group's recent intervals and its RTT baseline."""

    MAX_RTTS = 512  # RTT values kept per interval (a sample of them beyond that)

    def __init__(self) -> None:
        self.recent: deque[_Interval] = deque()
        self.mins: deque[tuple[float, float]] = deque()

    def add(self, t: float, rtts: np.ndarray, retrans: int, segs: int, rto: int) -> None:
        if len(rtts) > self.MAX_RTTS:
            rtts = rtts[np.linspace(0, len(rtts) - 1, self.MAX_RTTS).astype(np.int64)]
        self.recent.append(_Interval(t, rtts, retrans, segs, rto))
        if len(rtts):
            low = float(rtts.min())
            # Monotonic deque: the windowed minimum in O(1) amortised.
            while self.mins and self.mins[-1][1] >= low:
                self.mins.pop()
            self.mins.append((t, low))

    def expire(self, now: float) -> None:
        while self.recent and self.recent[0].t <= now - WINDOW:
            self.recent.popleft()
        while self.mins and self.mins[0][0] <= now - BASELINE_WINDOW:
            self.mins.popleft()

    @property
    def empty(self) -> bool:
        return not self.recent and not self.mins

    def figures(self) -> tuple[np.ndarray, int, int, int, float | None]:
        rtts = [i.rtts for i in self.recent if len(i.rtts)]
        all_rtts = np.concatenate(rtts) if rtts else np.zeros(0)
        base = self.mins[0][1] if self.mins else None
        return (
            all_rtts,
            sum(i.retrans for i in self.recent),
            sum(i.segs for i in self.recent),
            sum(i.rto for i in self.recent),
            base,
        )


def _judge(
    scope: str,
    name: str,
    series: _Series,
    where: str,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[HealthGroup, list[str]]:
    """Figures and verdict of one series; `where` ends the reasons ("to X")."""
    rtts, retrans, segs, rto, base = series.figures()
    p50 = float(np.percentile(rtts, 50)) if len(rtts) else None
    p95 = float(np.percentile(rtts, 95)) if len(rtts) else None
    ratio = retrans / segs if segs else None
    problems: list[str] = []
    if (
        p50 is not None
        and base
        and len(rtts) >= th.min_rtt_samples
        and p50 >= th.rtt_factor * base
        and p50 - base >= th.rtt_floor_us
    ):
        problems.append(f"RTT {p50 / base:.1f}x baseline ({p50 / 1000:.1f} ms)")
    if (
        ratio is not None
        and segs >= th.min_segments
        and retrans >= th.min_retransmits
        and ratio >= th.retransmit_ratio
    ):
        problems.append(f"{ratio * 100:.1f}% retransmits")
    if rto and rto >= th.min_rto:
        problems.append(f"{rto} RTO{'s' if rto > 1 else ''}")
    verdict = DEGRADED if problems else HEALTHY
    reason = f"{', '.join(problems)} {where}" if problems else ""
    group = HealthGroup(scope, name, verdict, reason, p50, p95, base, ratio, retrans, segs, rto)
    return group, problems


class HealthTracker:
    """Windowed RTT/retransmit figures and verdicts per interface and remote group."""

    def __init__(
        self,
        ifname: Callable[[int], str] = str,
        group_of: GroupNamer = prefix_group,
        max_groups: int = 4096,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        self.thresholds = thresholds  # config [health]; may be replaced at a reload
        self._ifname = ifname
        self._group_of = group_of
        self._max_groups = max_groups
        self._names: OrderedDict[tuple[bytes, int], str] = OrderedDict()
        # (ifindex, group) pairs, interfaces (ifindex, None), groups (None, name)
        self._series: OrderedDict[tuple[int | None, str | None], _Series] = OrderedDict()
        self.groups_dropped = 0
        self._result: list[HealthGroup] = []
        # Drops on this box per interval: (time, {(ifindex, None) | (None,
        # group): {reason name: packets}}), kept for WINDOW seconds.
        self._drops: deque[tuple[float, dict[tuple[int | None, str | None], dict[str, int]]]]
        self._drops = deque()

    def set_group_namer(self, group_of: GroupNamer) -> None:
        self._group_of = group_of
        self._names.clear()

    def _group(self, addr: bytes, ver: int) -> str:
        key = (addr, ver)
        name = self._names.get(key)
        if name is None:
            name = self._group_of(addr, ver)
            self._names[key] = name
            if len(self._names) > 65536:
                self._names.popitem(last=False)
        return name

    def _series_for(self, key: tuple[int | None, str | None]) -> _Series:
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
            if len(self._series) > self._max_groups:
                self._series.popitem(last=False)
                self.groups_dropped += 1
        else:
            self._series.move_to_end(key)
        return s

    def update(self, upd: TcpUpdate, now: float) -> None:
        """Adds one interval; call every interval, with or without TCP data."""
        if len(upd.rows):
            names = np.array(
                [
                    self._group(bytes(a), int(v))
                    for a, v in zip(upd.remote, upd.remote_ver, strict=True)
                ],
                dtype=object,
            )
            self._add(upd, names, now)
        for key in list(self._series):
            s = self._series[key]
            s.expire(now)
            if s.empty:
                del self._series[key]
        while self._drops and self._drops[0][0] <= now - WINDOW:
            self._drops.popleft()
        self._result = self._judge_all()

    def add_drops(self, recs: np.ndarray, reasons: DropReasons, now: float) -> None:
        """One interval's drop_records.DROP_RECORDs, per interface and per
        remote group (the source of an ingress drop, the destination of an
        egress one); call before update(). Interfaces get every drop; remote
        groups those of the DROP_REMOTES addresses with the most dropped
        packets this interval (a group is named per address, in Python: the
        cost stays bounded when a box drops for many addresses at once)."""
        if not len(recs):
            return
        k = recs["key"]
        got: dict[tuple[int | None, str | None], dict[str, int]] = {}

        def add(key: tuple[int | None, str | None], reason: int, n: int) -> None:
            per = got.setdefault(key, {})
            name = reasons.name(reason)
            per[name] = per.get(name, 0) + n

        # Per interface and reason: few distinct pairs, summed in numpy.
        pair = k["ifindex"].astype(np.uint64) << np.uint64(32) | recs["reason"].astype(np.uint64)
        uniq, inv = np.unique(pair, return_inverse=True)
        sums = group_sums(inv.ravel(), recs["packets"], len(uniq))
        for u, n in zip(uniq.tolist(), sums.tolist(), strict=True):
            add((u >> 32, None), u & 0xFFFF_FFFF, n)
        # Per remote address (IP drops only), the busiest DROP_REMOTES of them.
        ip = np.flatnonzero(np.isin(k["ip_version"], (4, 6)))
        if not len(ip):
            self._drops.append((now, got))
            return
        kk = k[ip]
        remote = np.where(kk["direction"] == layout.DIR_INGRESS, kk["src"], kk["dst"])
        ident = np.zeros(len(ip), dtype=[("a", "V16"), ("v", "u1")])
        ident["a"], ident["v"] = remote, kk["ip_version"]
        addrs, ainv = np.unique(ident, return_inverse=True)
        ainv = ainv.ravel()
        per_addr = group_sums(ainv, recs["packets"][ip], len(addrs))
        top = np.argsort(-per_addr.astype(np.float64), kind="stable")[:DROP_REMOTES]
        keep = np.isin(ainv, top)
        ar = ainv[keep].astype(np.uint64) << np.uint64(32) | recs["reason"][ip][keep].astype(
            np.uint64
        )
        uniq, inv = np.unique(ar, return_inverse=True)
        sums = group_sums(inv.ravel(), recs["packets"][ip][keep], len(uniq))
        for u, n in zip(uniq.tolist(), sums.tolist(), strict=True):
            a = addrs[u >> 32]
            add((None, self._group(bytes(a["a"]), int(a["v"]))), u & 0xFFFF_FFFF, n)
        self._drops.append((now, got))

    def _drops_in_window(self) -> dict[tuple[int | None, str | None], dict[str, int]]:
        out: dict[tuple[int | None, str | None], dict[str, int]] = {}
        for _t, got in self._drops:
            for key, per in got.items():
                acc = out.setdefault(key, {})
                for name, n in per.items():
                    acc[name] = acc.get(name, 0) + n
        return out

    def _with_drops(self, groups: list[HealthGroup]) -> list[HealthGroup]:
        """Groups with drops on this box in the window: degraded, the drops
        named first in the reason (see the module doc)."""
        drops = self._drops_in_window()
        if not drops:
            return groups
        named: dict[tuple[str, str], dict[str, int]] = {}
        for (ifindex, name), per in drops.items():
            if ifindex is not None:
                named[("interface", self._ifname(ifindex))] = per
            elif name is not None:
                named[("remote", name)] = per
        out = []
        for g in groups:
            per = named.pop((g.scope, g.group), {})
            if not per:
                out.append(g)
                continue
            why = drop_reason_text(per)
            out.append(_replace(g, DEGRADED, f"{why}; {g.reason}" if g.reason else why))
        for (scope, group), per in named.items():
            out.append(
                HealthGroup(
                    scope, group, DEGRADED, drop_reason_text(per), None, None, None, None, 0, 0, 0
                )
            )
        return out

    def _add(self, upd: TcpUpdate, names: np.ndarray, now: float) -> None:
        ifs = upd.ifindex.astype(np.int64)
        for ifindex in np.unique(ifs):
            on_if = ifs == ifindex
            self._add_rows(self._series_for((int(ifindex), None)), upd, on_if, False, now)
            for name in set(names[on_if]):
                sel = on_if & (names == name)
                self._add_rows(self._series_for((int(ifindex), name)), upd, sel, False, now)
        for name in set(names):
            # A forwarded connection crosses two interfaces: count it once.
            self._add_rows(self._series_for((None, name)), upd, names == name, True, now)

    @staticmethod
    def _add_rows(s: _Series, upd: TcpUpdate, sel: np.ndarray, dedupe: bool, now: float) -> None:
        rtts = upd.rtt_us[sel & upd.fresh_rtt].astype(np.float64)
        retr, segs, rto = upd.d_retrans[sel], upd.d_segs[sel], upd.d_rto[sel]
        if dedupe:
            conn = upd.conn[sel]
            _, first = np.unique(conn, return_index=True)
            retr, segs, rto = retr[first], segs[first], rto[first]
            fresh_conn = upd.conn[sel & upd.fresh_rtt]
            _, rfirst = np.unique(fresh_conn, return_index=True)
            rtts = rtts[rfirst]
        s.add(now, rtts, int(retr.sum()), int(segs.sum()), int(rto.sum()))

    def _judge_all(self) -> list[HealthGroup]:
        out: list[HealthGroup] = []
        per_if: dict[int, list[bool]] = {}
        pair_problems: dict[int, dict[str, list[str]]] = {}
        for (ifindex, name), s in self._series.items():
            if ifindex is not None and name is not None:
                g, problems = _judge("pair", name, s, "", self.thresholds)
                if g.retransmits or g.rtt_p50_us is not None or g.rto:
                    per_if.setdefault(ifindex, []).append(g.degraded)
                    pair_problems.setdefault(ifindex, {})[name] = problems
        for (ifindex, name), s in self._series.items():
            if ifindex is None and name is not None:
                out.append(_judge("remote", name, s, f"to {name}", self.thresholds)[0])
            elif ifindex is not None and name is None:
                ifn = self._ifname(ifindex)
                g, problems = _judge(
                    "interface", ifn, s, f"on {ifn} to all destinations", self.thresholds
                )
                states = per_if.get(ifindex, [])
                bad = [n for n, p in pair_problems.get(ifindex, {}).items() if p]
                if len(states) > 1 and not all(states) and bad:
                    # Some destinations are fine: the link is not the problem.
                    g = _replace(
                        g,
                        HEALTHY,
                        f"{len(bad)} of {len(states)} destinations degraded "
                        f"({', '.join(sorted(bad)[:3])})",
                    )
                elif g.degraded and len(states) == 1:
                    only = next(iter(pair_problems.get(ifindex, {})), "?")
                    g = _replace(g, DEGRADED, f"{', '.join(problems)} on {ifn} to {only}")
                out.append(g)
        out = self._with_drops(out)
        out.sort(key=_badness, reverse=True)
        return out

    def groups(self) -> list[HealthGroup]:
        """Every interface and remote group, worst first."""
        return list(self._result)

    def degraded(self) -> list[HealthGroup]:
        return [g for g in self._result if g.degraded]


def drop_reason_text(per: dict[str, int]) -> str:
    """'dropped on this box: NETFILTER_DROP, 12 packets (and NO_SOCKET, 3)'."""
    top = sorted(per.items(), key=lambda t: (-t[1], t[0]))
    first, n = top[0]
    text = f"{LOCAL_DROPS}: {first}, {n} packet{'s' if n != 1 else ''}"
    more = top[1:_DROP_REASONS_SHOWN]
    if more:
        text += " (and " + ", ".join(f"{nm}, {c}" for nm, c in more) + ")"
    if len(top) > _DROP_REASONS_SHOWN:
        text += f" and {len(top) - _DROP_REASONS_SHOWN} more reasons"
    return text


def _replace(g: HealthGroup, verdict: str, reason: str) -> HealthGroup:
    return HealthGroup(
        g.scope,
        g.group,
        verdict,
        reason,
        g.rtt_p50_us,
        g.rtt_p95_us,
        g.rtt_baseline_us,
        g.retransmit_ratio,
        g.retransmits,
        g.data_segments,
        g.rto,
    )


def _badness(g: HealthGroup) -> tuple[int, float, float]:
    ratio = g.retransmit_ratio or 0.0
    rtt = (g.rtt_p50_us or 0.0) / g.rtt_baseline_us if g.rtt_baseline_us else 0.0
    return (int(g.degraded), ratio, rtt)


# One group's window and its verdict, for trackers of other groups
# (query/monitors.py): the same figures and the same logic as the groups here.
Series = _Series
judge = _judge
add_rows = HealthTracker._add_rows
