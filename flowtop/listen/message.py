"""What IPFIX and NetFlow v9 share: sets of templates and data, read in two passes.

read() takes a message's sets (after its header) against a working copy of
the domain's templates and checks everything: set lengths, template field
counts, field lengths, template ids, variable-length records. Only when the
whole message is sound does commit() apply it (templates, records, options,
the sequence number); a malformed one changes nothing and is counted by the
caller. Padding: bytes after a set's last record shorter than one record
(data sets) or than 4 bytes (template sets).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

from flowtop.listen.exporters import MAX_IFNAMES, DomainState, Exporter, ExporterTable
from flowtop.listen.templates import VARIABLE, FieldSpec, Record, Template, decode_variable

_SET = struct.Struct("!HH")
_U16X2 = struct.Struct("!HH")
_U16X3 = struct.Struct("!HHH")
_U32 = struct.Struct("!I")
ENTERPRISE_BIT = 0x8000
MAX_SAMPLING = 1 << 24


class Malformed(Exception):
    """A message that breaks its format (never leaves the decoders)."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a format spells its sets: IPFIX (RFC 7011) or NetFlow v9 (RFC 3954)."""

    name: str
    template_set: int
    options_set: int
    enterprise: bool  # field specifiers may carry an enterprise number
    variable: bool  # length 65535 means variable length
    min_data_set: int = 256


IPFIX = Dialect("ipfix", 2, 3, enterprise=True, variable=True)
NETFLOW9 = Dialect("netflow9", 0, 1, enterprise=False, variable=False)

# NetFlow v9 options scope field types (RFC 3954 §6.1): only "interface" is
# read (as ingressInterface, for interface names); the rest are skipped.
_V9_SCOPE_INTERFACE = 2
_SKIP = 0xFFFFFFFF  # enterprise number that no column has: skipped by length


@dataclass(slots=True)
class Parsed:
    """One message's sets, checked, not yet applied."""

    templates: dict[int, tuple[Template, float, bool]]  # the domain's, as the message leaves them
    fixed: list[tuple[Template, int, int]] = field(default_factory=list)  # (t, offset, count)
    variable: list[tuple[Template, list[Record]]] = field(default_factory=list)
    options: list[Record] = field(default_factory=list)
    records: int = 0  # data records of known templates (flow and options)
    missing: int = 0  # data sets whose template is unknown
    refused: int = 0  # templates beyond the exporter's cap


def read(
    dialect: Dialect,
    msg: bytes,
    pos: int,
    ex: Exporter,
    d: DomainState,
    table: ExporterTable,
    now: float,
    tcp: bool,
) -> Parsed:
    """The sets of msg from pos to its end; raises Malformed."""
    live = {}
    for tid in list(d.templates):
        t = table.template(d, tid, now)  # drops expired UDP templates
        if t is not None:
            live[tid] = d.templates[tid]
    p = Parsed(live)
    others = ex.template_count - len(d.templates)
    n = len(msg)
    while pos < n:
        if n - pos < 4:
            if dialect is NETFLOW9 and not any(msg[pos:]):
                break  # v9 exporters may pad the packet itself
            raise Malformed("set header cut short")
        sid, slen = _SET.unpack_from(msg, pos)
        if slen < 4 or pos + slen > n:
            raise Malformed(f"set length {slen}")
        body, end = pos + 4, pos + slen
        if sid in (dialect.template_set, dialect.options_set):
            _templates(
                dialect, msg, body, end, sid == dialect.options_set, p, now, tcp, table, others
            )
        elif sid >= dialect.min_data_set:
            _data(msg, body, end, p.templates.get(sid), p)
        else:
            raise Malformed(f"set id {sid}")
        pos = end
    return p


def _data(
    msg: bytes, body: int, end: int, entry: tuple[Template, float, bool] | None, p: Parsed
) -> None:
    if entry is None:
        p.missing += 1
        return
    t = entry[0]
    if t.is_options or not t.fixed:
        recs = decode_variable(t, msg, body, end)
        if recs is None:
            raise Malformed(f"template {t.template_id}: a field runs past its set")
        p.records += len(recs)
        if t.is_options:
            p.options.extend(recs)
        elif recs:
            p.variable.append((t, recs))
        return
    count = (end - body) // t.record_len
    p.records += count
    if count:
        p.fixed.append((t, body, count))


def _templates(
    dialect: Dialect,
    msg: bytes,
    pos: int,
    end: int,
    options: bool,
    p: Parsed,
    now: float,
    tcp: bool,
    table: ExporterTable,
    others: int,
) -> None:
    while end - pos >= 4:
        tid, count = _U16X2.unpack_from(msg, pos)
        if dialect is IPFIX and count == 0:  # withdrawal (RFC 7011 §8.1)
            if tid == dialect.template_set or tid == dialect.options_set:  # all of a kind
                kind = tid == dialect.options_set
                for k in [k for k, v in p.templates.items() if v[0].is_options == kind]:
                    del p.templates[k]
            elif tid >= 256:
                p.templates.pop(tid, None)
            else:
                raise Malformed(f"withdrawal of template {tid}")
            pos += 4
            continue
        if tid < 256:
            raise Malformed(f"template id {tid}")
        if options and dialect is NETFLOW9:
            t, pos = _v9_options(msg, pos, end)
        else:
            scope = 0
            pos += 4
            if options:
                if end - pos < 2:
                    raise Malformed("options template header cut short")
                (scope,) = struct.unpack_from("!H", msg, pos)
                pos += 2
                if not 1 <= scope <= count:
                    raise Malformed(f"scope field count {scope} of {count}")
            start = pos
            specs, pos = _specs(dialect, msg, pos, end, count)
            t = _compile(tid, msg[start:pos], tuple(specs), scope)
        if tid not in p.templates and others + len(p.templates) >= table.max_templates:
            p.refused += 1
        else:
            p.templates[tid] = (t, now, tcp)


def _specs(
    dialect: Dialect, msg: bytes, pos: int, end: int, count: int
) -> tuple[list[FieldSpec], int]:
    specs = []
    for _ in range(count):
        if end - pos < 4:
            raise Malformed("field specifier cut short")
        ie, length = _U16X2.unpack_from(msg, pos)
        pos += 4
        enterprise = 0
        if dialect.enterprise and ie & ENTERPRISE_BIT:
            if end - pos < 4:
                raise Malformed("enterprise number cut short")
            (enterprise,) = _U32.unpack_from(msg, pos)
            pos += 4
            ie &= ~ENTERPRISE_BIT
        if length == VARIABLE and not dialect.variable:
            raise Malformed("variable length in NetFlow v9")
        specs.append(FieldSpec(ie, length, enterprise))
    return specs, pos


def _v9_options(msg: bytes, pos: int, end: int) -> tuple[Template, int]:
    """A v9 options template record at pos (RFC 3954 §6.1): id, scope and
    option lengths in bytes, then their field specifiers."""
    if end - pos < 6:
        raise Malformed("options template header cut short")
    tid, scope_len, opt_len = _U16X3.unpack_from(msg, pos)
    pos += 6
    if scope_len % 4 or opt_len % 4 or scope_len == 0 or pos + scope_len + opt_len > end:
        raise Malformed("options template lengths")
    specs = []
    for i in range((scope_len + opt_len) // 4):
        kind, length = _U16X2.unpack_from(msg, pos + 4 * i)
        if length == VARIABLE:
            raise Malformed("variable length in NetFlow v9")
        if i < scope_len // 4:  # scope types are not element ids
            if kind == _V9_SCOPE_INTERFACE:
                specs.append(FieldSpec(10, length))  # ingressInterface
            else:
                specs.append(FieldSpec(kind, length, _SKIP))
        else:
            specs.append(FieldSpec(kind, length))
    raw = msg[pos : pos + scope_len + opt_len]
    return _compile(tid, raw, tuple(specs), scope_len // 4), pos + scope_len + opt_len


@functools.lru_cache(maxsize=4096)
def _cached(tid: int, raw: bytes, specs: tuple[FieldSpec, ...], scope: int) -> Template:
    return Template(tid, specs, scope)


def _compile(tid: int, raw: bytes, specs: tuple[FieldSpec, ...], scope: int) -> Template:
    """The compiled template; exporters resend the same ones all the time, and
    a Template is immutable: one compile per distinct definition (raw, the
    specifiers' bytes, is what the cache compares; bounded)."""
    if not specs:
        raise Malformed(f"template {tid} without fields")
    t = _cached(tid, raw, specs, scope)
    if t.record_len == 0:
        raise Malformed(f"template {tid} of zero-length records")
    return t


def commit(p: Parsed, ex: Exporter, d: DomainState, table: ExporterTable) -> None:
    """Apply a read message's templates and options records to the domain."""
    d.templates = p.templates
    if p.refused:
        ex.templates_dropped += p.refused
        table.counters["listen_templates_dropped"] += p.refused
    if p.missing:
        table.missing(ex, p.missing)
    for rec in p.options:
        apply_options(d, rec)
    table.counters["listen_options_records"] += len(p.options)


def apply_options(d: DomainState, rec: Record) -> None:
    """An options data record: the domain's sampling interval, its init time
    (systemInitTimeMilliseconds), an interface's name."""
    s = rec.get("sampling")
    space, taken = rec.get("sampling_space"), rec.get("sampling_taken")
    if s is None and isinstance(space, int) and isinstance(taken, int) and taken > 0:
        s = (space + taken) // taken
    if isinstance(s, int):
        d.sampling = min(max(s, 1), MAX_SAMPLING)
    init = rec.get("init_ms")
    if isinstance(init, int) and init > 0:
        d.init_ms = init
    name, ifindex = rec.get("ifname"), rec.get("in_if")
    room = ifindex in d.ifnames or len(d.ifnames) < MAX_IFNAMES
    if isinstance(name, bytes) and isinstance(ifindex, int) and room:
        d.ifnames[ifindex] = name[:64]
