"""A small, independent IPFIX decoder for the tests (RFC 7011 §3, fixed-length IEs).

It shares nothing with flowtop.export: it reads ids and lengths off the wire
and returns raw integers/bytes per IE id, so the tests check the encoder
against the RFC rather than against itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


@dataclass
class Message:
    length: int
    export_time: int
    sequence: int
    domain: int
    sets: list[tuple[int, bytes]]
    templates: list[tuple[int, int, list[tuple[int, int]]]] = field(default_factory=list)
    records: list[tuple[int, list[tuple[int, int | bytes]]]] = field(default_factory=list)


class Decoder:
    """Keeps templates across messages, like a collector for one transport session."""

    def __init__(self) -> None:
        self.templates: dict[int, tuple[int, list[tuple[int, int]]]] = {}

    def message(self, data: bytes) -> Message:
        version, length, export_time, seq, domain = struct.unpack_from("!HHIII", data)
        assert version == 10, version
        assert length == len(data), (length, len(data))
        msg = Message(length, export_time, seq, domain, [])
        off = 16
        while off < length:
            set_id, set_len = struct.unpack_from("!HH", data, off)
            assert set_len >= 4 and off + set_len <= length, "set overruns message"
            body = data[off + 4 : off + set_len]
            msg.sets.append((set_id, body))
            if set_id in (2, 3):
                self._templates(set_id, body, msg)
            elif set_id >= 256:
                self._data(set_id, body, msg)
            else:
                raise AssertionError(f"reserved set id {set_id}")
            off += set_len
        assert off == length
        return msg

    def _templates(self, set_id: int, body: bytes, msg: Message) -> None:
        off = 0
        while len(body) - off >= 4:
            tid, count = struct.unpack_from("!HH", body, off)
            off += 4
            scope = 0
            if set_id == 3:
                (scope,) = struct.unpack_from("!H", body, off)
                off += 2
            specs = []
            for _ in range(count):
                ie, length = struct.unpack_from("!HH", body, off)
                assert not ie & 0x8000, "enterprise IEs not expected"
                specs.append((ie, length))
                off += 4
            self.templates[tid] = (scope, specs)
            msg.templates.append((tid, scope, specs))
        assert off == len(body), "template set padding"

    def _data(self, set_id: int, body: bytes, msg: Message) -> None:
        _scope, specs = self.templates[set_id]
        size = sum(length for _, length in specs)
        assert len(body) % size == 0, "data set has padding or a partial record"
        for off in range(0, len(body), size):
            values: list[tuple[int, int | bytes]] = []
            for ie, length in specs:
                raw = body[off : off + length]
                values.append((ie, raw if ie in (8, 12, 27, 28) else int.from_bytes(raw, "big")))
                off += length
            msg.records.append((set_id, values))


def fields(values: list[tuple[int, int | bytes]]) -> dict[int, int | bytes]:
    """IE id -> value (the first occurrence of each id)."""
    out: dict[int, int | bytes] = {}
    for ie, v in values:
        out.setdefault(ie, v)
    return out
