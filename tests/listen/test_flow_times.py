"""Flow start times in every unit IPFIX exporters send them (RFC 7011 §6.1.7-10,
IANA 21/22, 150-157, 160), as the flow's age at export: hand-built messages,
each age worked out here from the values sent."""

from __future__ import annotations

import struct

from tests.listen import build as b
from tests.listen.decoding import decoder, feed, flows

NTP_UNIX = 2_208_988_800
EXPORT = 1_000  # the message's export time, unix seconds
KEY = [(8, 4), (12, 4), (4, 1), (1, 4), (2, 4)]  # src, dst, proto, octets, packets


def _key() -> bytes:
    return b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + struct.pack("!BII", 17, 1000, 10)


def _ntp(unix_s: int, frac: float) -> int:
    return (unix_s + NTP_UNIX) << 32 | int(frac * 2**32)


def _age_ms(fields: list[b.Field], tail: bytes, *extra: bytes) -> int:
    d = decoder()
    t = b.set_(2, b.template(300, KEY + fields))
    feed(d, [*extra, b.ipfix_message([t, b.set_(300, _key() + tail)], export=EXPORT, seq=0)])
    (f,) = flows(d)
    assert f.age_ns % 1_000_000 == 0
    return f.age_ns // 1_000_000


def test_nanoseconds_and_microseconds() -> None:
    ns = struct.pack("!QQ", _ntp(EXPORT - 3, 0.25), _ntp(EXPORT - 1, 0.0))
    assert _age_ms([(156, 8), (157, 8)], ns) == 2750
    us = struct.pack("!QQ", _ntp(EXPORT - 5, 0.5), _ntp(EXPORT, 0.0))
    assert _age_ms([(154, 8), (155, 8)], us) == 4500
    # milliseconds win over both when a template has them all
    ms = struct.pack("!QQ", (EXPORT - 7) * 1000, _ntp(EXPORT - 3, 0.0))
    assert _age_ms([(152, 8), (156, 8)], ms) == 7000


def test_a_reduced_size_timestamp_is_not_read() -> None:
    # dateTime* elements have no reduced-size encoding: skipped by length
    assert _age_ms([(156, 4)], struct.pack("!I", 12345)) == 0


def test_sysuptime_without_an_init_time_is_the_duration() -> None:
    assert _age_ms([(22, 4), (21, 4)], struct.pack("!II", 5_000, 12_000)) == 7_000
    # the 32-bit uptime wrapped during the flow
    assert _age_ms([(22, 4), (21, 4)], struct.pack("!II", 2**32 - 1_000, 500)) == 1_500


def test_sysuptime_with_the_records_init_time() -> None:
    init = EXPORT * 1000 - 60_000  # booted a minute before the export
    rec = struct.pack("!IIQ", 40_000, 50_000, init)  # start 20 s before the export
    assert _age_ms([(22, 4), (21, 4), (160, 8)], rec) == 20_000


def test_sysuptime_with_an_options_records_init_time() -> None:
    init = EXPORT * 1000 - 90_000
    opt = b.set_(3, b.options_template(500, [(149, 4)], [(160, 8)]))
    orec = b.set_(500, struct.pack("!IQ", 1, init))
    options = b.ipfix_message([opt, orec], export=EXPORT, seq=0)
    rec = struct.pack("!II", 30_000, 89_000)  # started 60 s before the export
    assert _age_ms([(22, 4), (21, 4)], rec, options) == 60_000
