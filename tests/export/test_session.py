"""Sequence numbers, template refresh and message sizes (Session, fake clock)."""

from __future__ import annotations

import pytest

from flowtop.export.ipfix.message import HEADER, Message, Session
from flowtop.export.ipfix.records import split_by_version
from flowtop.export.ipfix.template import EXPORTER_RELIABILITY, IPV4_FLOW, IPV6_FLOW

from .decode import Decoder
from .flows import many

TEMPLATES = (IPV4_FLOW, IPV6_FLOW, EXPORTER_RELIABILITY)


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def send_all(s: Session, n: int, v6_every: int = 0, seed: int = 1) -> list[Message]:
    out = []
    encoded, _ = split_by_version(many(n, v6_every, seed), IPV4_FLOW, IPV6_FLOW)
    for enc in encoded:
        for m in s.data_messages(enc):
            s.sent(m)
            out.append(m)
    return out


def test_sequence_counts_data_records_before_each_message() -> None:
    s = Session(9, TEMPLATES, 1400, refresh_interval=None, clock=Clock())
    msgs = send_all(s, 500, v6_every=3)
    dec = Decoder()
    expected = 0
    for m in msgs:
        d = dec.message(m.data)
        assert d.sequence == expected
        assert d.domain == 9
        expected += len(d.records)
    assert expected == 500 == s.sequence
    assert msgs[0].kind == "templates"
    assert sum(m.kind == "templates" for m in msgs) == 1


def test_sequence_wraps_modulo_2_32() -> None:
    s = Session(1, TEMPLATES, clock=Clock())
    s.templates_sent = True
    s.sequence = 2**32 - 5
    msgs = send_all(s, 30)
    dec = Decoder()
    dec.templates = {t.template_id: (0, [(f.id, f.length) for f in t.fields]) for t in TEMPLATES}
    seqs = [dec.message(m.data).sequence for m in msgs]
    assert seqs[0] == 2**32 - 5
    assert seqs[1] == (2**32 - 5 + msgs[0].records) % 2**32
    assert s.sequence == 25


def test_templates_refreshed_on_interval() -> None:
    clock = Clock()
    s = Session(1, TEMPLATES, refresh_interval=60, refresh_messages=None, clock=clock)
    kinds = [m.kind for m in send_all(s, 50)]
    assert kinds.count("templates") == 1
    clock.t += 59.9
    assert not s.templates_due()
    assert [m.kind for m in send_all(s, 10)].count("templates") == 0
    clock.t += 0.1
    assert s.templates_due()
    kinds = [m.kind for m in send_all(s, 50)]
    assert kinds[0] == "templates" and kinds.count("templates") == 1


def test_templates_refreshed_every_n_messages() -> None:
    s = Session(1, TEMPLATES, refresh_interval=None, refresh_messages=10, clock=Clock())
    kinds = [m.kind for m in send_all(s, 21 * 35)]  # 35 full IPv4 messages
    assert kinds.count("data") == 35
    positions = [i for i, k in enumerate(kinds) if k == "templates"]
    assert positions == [0, 11, 22, 33]  # before data messages 1, 11, 21, 31


def test_failed_send_resends_templates_first() -> None:
    s = Session(1, TEMPLATES, refresh_interval=None, clock=Clock())
    encoded, _ = split_by_version(many(100), IPV4_FLOW, IPV6_FLOW)
    gen = s.data_messages(encoded[0])
    t = next(gen)
    s.sent(t)
    d1 = next(gen)
    s.failed(d1)  # e.g. ECONNREFUSED: the collector may have lost the templates too
    assert next(gen).kind == "templates"
    assert s.sequence == 0  # nothing counted for the message that was not sent


def test_restart_starts_a_new_stream() -> None:
    s = Session(1, TEMPLATES, refresh_interval=None, clock=Clock())
    send_all(s, 100)
    assert s.sequence == 100 and not s.templates_due()
    s.restart()
    assert s.sequence == 0 and s.templates_due()


@pytest.mark.parametrize("max_size", [200, 512, 1400, 1500, 9000, 65535])
def test_burst_never_exceeds_max_size(max_size: int) -> None:
    s = Session(1, TEMPLATES, max_size, refresh_interval=None, refresh_messages=7, clock=Clock())
    msgs = send_all(s, 10_000, v6_every=4)
    dec = Decoder()
    records = 0
    for m in msgs:
        assert len(m.data) <= max_size
        d = dec.message(m.data)  # sets end exactly at the message end
        records += len(d.records)
    assert records == 10_000
    # Messages are as full as the size allows.
    data = [m for m in msgs if m.kind == "data"]
    full = max(len(m.data) for m in data)
    assert full > max_size - IPV6_FLOW.record_size - HEADER.size


def test_template_larger_than_message_is_refused() -> None:
    with pytest.raises(ValueError):
        Session(1, TEMPLATES, 100)
