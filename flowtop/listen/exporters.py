"""Per-exporter state: templates, sequence numbers, sampling, counters; bounded.

An exporter is one source address (the UDP source port is not part of it: an
exporter that restarts on a new port keeps its templates and sequence, which
is what a viewer wants); its observation domains (IPFIX domain id, v9 source
id, v5 engine type/id) each have their own templates, sequence and sampling.

Bounds, each counted when hit (counters.py): at most max_exporters exporters
(the one heard from longest ago is evicted: a flood of spoofed addresses
replaces state, never grows it), MAX_DOMAINS domains and max_templates
templates per exporter (a template beyond is refused: its data sets count as
templates missing), MAX_IFNAMES interface names per domain.

Loss accounting (sequence()): the next expected number is the last one plus
what the message carried (IPFIX: data records, v5: flows, v9: 1 packet),
modulo 2^32. A message ahead of it by less than 2^31 counts the gap as lost.
One behind by at most LATE_WINDOW is a late (reordered or repeated) message:
its records are taken off what is still counted lost, the expectation stays.
Anything else (an exporter restart) starts counting again from it, nothing
counted. A message with a data set whose template is unknown carries an
unknown number of records: the next message starts counting again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from flowtop.listen import counters as lc
from flowtop.listen.templates import Template

MODULUS = 1 << 32
LATE_WINDOW = 1 << 16
MAX_DOMAINS = 16
MAX_IFNAMES = 1024
DEFAULT_MAX_EXPORTERS = 1024
DEFAULT_MAX_TEMPLATES = 128
# RFC 7011 §8.4 leaves the UDP template lifetime to the collector; RFC 6728's
# templateLifeTime default is 1800 s (three times a 600 s refresh).
DEFAULT_TEMPLATE_LIFETIME = 1800.0


@dataclass(slots=True)
class DomainState:
    """One (exporter, observation domain)."""

    templates: dict[int, tuple[Template, float, bool]] = field(default_factory=dict)
    # (template, monotonic seconds it was last (re)defined, came over TCP: never expires)
    next_seq: int | None = None
    lost: int = 0  # records (v9: packets) the sequence says are still missing
    sampling: int = 1  # the exporter's packet sampling interval (1: not sampled)
    scaled: int = 1  # the last rate a decoder applied itself (sFlow samples), for display
    # systemInitTimeMilliseconds from an options record: what sysUpTime-relative
    # flow times of records without one count from (None: not sent)
    init_ms: int | None = None
    ifnames: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Exporter:
    """One exporting address and what was counted from it."""

    address: str
    protocol: str = ""  # the last message's: ipfix, netflow9, netflow5
    domains: dict[int, DomainState] = field(default_factory=dict)
    messages: int = 0
    records: int = 0
    errors: int = 0  # malformed messages, and domains refused for room
    missing: int = 0  # data sets without a template
    lost_total: int = 0  # every gap counted (a late message does not undo it)
    templates_dropped: int = 0
    last_seen: float = 0.0

    @property
    def lost(self) -> int:
        return sum(d.lost for d in self.domains.values())

    @property
    def template_count(self) -> int:
        return sum(len(d.templates) for d in self.domains.values())

    @property
    def sampling(self) -> int:
        return max((max(d.sampling, d.scaled) for d in self.domains.values()), default=1)

    def as_dict(self) -> dict[str, object]:
        """The `dump --json` "exporter" line (without "type")."""
        return {
            "exporter": self.address,
            "protocol": self.protocol,
            "domains": sorted(self.domains),
            "messages": self.messages,
            "records": self.records,
            "lost": self.lost,
            "templates": self.template_count,
            "templates_missing": self.missing,
            "errors": self.errors,
            "sampling": self.sampling,
            "estimated": self.sampling > 1,
        }


class ExporterTable:
    """Every exporter heard from, at most max_exporters (least recently heard evicted)."""

    def __init__(
        self,
        max_exporters: int = DEFAULT_MAX_EXPORTERS,
        max_templates: int = DEFAULT_MAX_TEMPLATES,
        template_lifetime: float = DEFAULT_TEMPLATE_LIFETIME,
    ) -> None:
        self.max_exporters = max_exporters
        self.max_templates = max_templates
        self.template_lifetime = template_lifetime
        self._by_addr: OrderedDict[str, Exporter] = OrderedDict()
        self.counters: dict[str, int] = dict.fromkeys(lc.ALL, 0)

    def __len__(self) -> int:
        return len(self._by_addr)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_addr.values()))

    def get(self, address: str, now: float) -> Exporter:
        ex = self._by_addr.get(address)
        if ex is None:
            while len(self._by_addr) >= self.max_exporters:
                self._by_addr.popitem(last=False)
                self.counters[lc.EXPORTERS_EVICTED] += 1
            ex = self._by_addr[address] = Exporter(address)
        else:
            self._by_addr.move_to_end(address)
        ex.last_seen = now
        return ex

    def domain(self, ex: Exporter, domain_id: int) -> DomainState | None:
        """ex's domain, made if there is room (None: refused, counted)."""
        d = ex.domains.get(domain_id)
        if d is None:
            if len(ex.domains) >= MAX_DOMAINS:
                return None
            d = ex.domains[domain_id] = DomainState()
        return d

    def template(self, d: DomainState, tid: int, now: float) -> Template | None:
        """The live template tid of d (an expired UDP one is removed: None)."""
        entry = d.templates.get(tid)
        if entry is None:
            return None
        t, when, tcp = entry
        if not tcp and now - when > self.template_lifetime:
            del d.templates[tid]
            return None
        return t

    def define(self, ex: Exporter, d: DomainState, t: Template, now: float, tcp: bool) -> None:
        if t.template_id not in d.templates and ex.template_count >= self.max_templates:
            ex.templates_dropped += 1
            self.counters[lc.TEMPLATES_DROPPED] += 1
            return
        d.templates[t.template_id] = (t, now, tcp)

    def sequence(self, ex: Exporter, d: DomainState, seq: int, count: int | None) -> None:
        """Account message sequence number seq carrying count (None: unknown)."""
        expected = d.next_seq
        if count is None:
            d.next_seq = None
            return
        if expected is None:
            d.next_seq = (seq + count) % MODULUS
            return
        gap = (seq - expected) % MODULUS
        if gap == 0:
            d.next_seq = (seq + count) % MODULUS
        elif gap < MODULUS // 2:
            d.lost += gap
            ex.lost_total += gap
            self.counters[lc.RECORDS_LOST] += gap
            d.next_seq = (seq + count) % MODULUS
        elif MODULUS - gap <= LATE_WINDOW:
            back = min(d.lost, count)
            d.lost -= back
            self.counters[lc.RECORDS_LOST] -= back
        else:
            d.next_seq = (seq + count) % MODULUS

    def error(self, ex: Exporter | None) -> None:
        self.counters[lc.DECODE_ERRORS] += 1
        if ex is not None:
            ex.errors += 1

    def missing(self, ex: Exporter, sets: int) -> None:
        ex.missing += sets
        self.counters[lc.TEMPLATES_MISSING] += sets
