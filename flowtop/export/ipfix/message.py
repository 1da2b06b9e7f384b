"""IPFIX Messages (RFC 7011 §3): header, sets, size limits and sequence numbers.

A Session is one Transport Session's view of one Observation Domain: it
numbers Data Records, decides when templates are (re)sent, and cuts encoded
records into messages that never exceed the configured size (a set never
spans messages; no set padding). Messages are built lazily, one at a time, so
the sequence number in each header counts exactly the Data Records that were
sent before it: the sender reports each outcome (sent / failed) before asking
for the next message.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from flowtop.export.ipfix.records import EncodedRecords
from flowtop.export.ipfix.template import Template

VERSION = 10
HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence, domain id
SET_HEADER = struct.Struct("!HH")  # set id, length
MAX_MESSAGE_SIZE = 0xFFFF
_SEQ_MOD = 1 << 32


def encode_set(set_id: int, payload: bytes | memoryview) -> bytes:
    return SET_HEADER.pack(set_id, SET_HEADER.size + len(payload)) + payload


def encode_message(sets: Iterable[bytes], export_time: int, sequence: int, domain_id: int) -> bytes:
    body = b"".join(sets)
    length = HEADER.size + len(body)
    if length > MAX_MESSAGE_SIZE:
        raise ValueError(f"IPFIX message of {length} bytes exceeds 65535")
    return HEADER.pack(VERSION, length, export_time, sequence % _SEQ_MOD, domain_id) + body


def template_sets(templates: Sequence[Template], max_size: int) -> list[list[bytes]]:
    """Template and Options Template sets, grouped into messages of at most max_size."""
    room = max_size - HEADER.size - SET_HEADER.size
    messages: list[list[bytes]] = []
    for set_id in sorted({t.set_id for t in templates}):
        chunk: list[bytes] = []
        for t in (t for t in templates if t.set_id == set_id):
            if len(t.wire) > room:
                raise ValueError(f"template {t.template_id} does not fit in {max_size} bytes")
            if sum(map(len, chunk)) + len(t.wire) > room:
                messages.append([encode_set(set_id, b"".join(chunk))])
                chunk = []
            chunk.append(t.wire)
        messages.append([encode_set(set_id, b"".join(chunk))])
    # Sets of different kinds share a message when they fit together.
    merged: list[list[bytes]] = []
    for sets in messages:
        size = sum(map(len, sets))
        if merged and HEADER.size + sum(map(len, merged[-1])) + size <= max_size:
            merged[-1].extend(sets)
        else:
            merged.append(list(sets))
    return merged


def records_per_message(record_size: int, max_size: int) -> int:
    per = (max_size - HEADER.size - SET_HEADER.size) // record_size
    if per < 1:
        raise ValueError(f"a {record_size}-byte record does not fit in {max_size} bytes")
    return per


@dataclass(frozen=True, slots=True)
class Message:
    """One encoded IPFIX Message and what it carries."""

    data: bytes
    kind: str  # "templates", "data" or "options"
    records: int = 0  # Data Records (what the sequence number counts)
    flows: int = 0  # flow records among them
    packets: int = 0
    octets: int = 0


class Session:
    """Sequence numbers and template timing for one domain on one transport session."""

    def __init__(
        self,
        domain_id: int,
        templates: Sequence[Template],
        max_size: int = 1400,
        refresh_interval: float | None = 60.0,
        refresh_messages: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not 0 <= domain_id <= 0xFFFFFFFF:
            raise ValueError("observation domain id must fit in 32 bits")
        self.domain_id = domain_id
        self.templates = tuple(templates)
        self.max_size = max_size
        self.refresh_interval = refresh_interval
        self.refresh_messages = refresh_messages
        self.clock = clock or time.time
        self._template_sets = template_sets(self.templates, max_size)
        for t in self.templates:
            records_per_message(t.record_size, max_size)
        self.sequence = 0
        self.templates_sent = False
        self.last_templates = 0.0
        self.since_templates = 0  # messages sent since the templates

    def restart(self) -> None:
        """A new transport session (TCP reconnect): templates first, sequence from 0."""
        self.sequence = 0
        self.templates_sent = False

    def templates_due(self) -> bool:
        if not self.templates_sent:
            return True
        interval = self.refresh_interval
        if interval is not None and self.clock() - self.last_templates >= interval:
            return True
        return self.refresh_messages is not None and self.since_templates >= self.refresh_messages

    def _export_time(self) -> int:
        return int(self.clock()) & 0xFFFFFFFF

    def template_messages(self) -> Iterator[Message]:
        for sets in self._template_sets:
            yield Message(
                encode_message(sets, self._export_time(), self.sequence, self.domain_id),
                "templates",
            )

    def _with_templates(self) -> Iterator[Message]:
        if self.templates_due():
            yield from self.template_messages()

    def data_messages(self, enc: EncodedRecords) -> Iterator[Message]:
        """The records in messages of at most max_size, templates first when due."""
        tmpl = enc.template
        size = tmpl.record_size
        per = records_per_message(size, self.max_size)
        raw = np.ascontiguousarray(enc.records).view(np.uint8).data
        cum_p = [0, *np.cumsum(enc.packets, dtype=np.uint64).tolist()]
        cum_o = [0, *np.cumsum(enc.octets, dtype=np.uint64).tolist()]
        n = len(enc)
        for a in range(0, n, per):
            b = min(a + per, n)
            yield from self._with_templates()
            sets = (encode_set(tmpl.template_id, raw[a * size : b * size]),)
            data = encode_message(sets, self._export_time(), self.sequence, self.domain_id)
            yield Message(
                data,
                "data",
                records=b - a,
                flows=b - a,
                packets=cum_p[b] - cum_p[a],
                octets=cum_o[b] - cum_o[a],
            )

    def options_messages(self, tmpl: Template, values: Sequence[int | bytes]) -> Iterator[Message]:
        yield from self._with_templates()
        sets = (encode_set(tmpl.template_id, tmpl.pack(*values)),)
        yield Message(
            encode_message(sets, self._export_time(), self.sequence, self.domain_id),
            "options",
            records=1,
        )

    def sent(self, msg: Message) -> None:
        """msg went out: count its records; templates restart the refresh clocks."""
        self.sequence = (self.sequence + msg.records) % _SEQ_MOD
        if msg.kind == "templates":
            self.templates_sent = True
            self.last_templates = self.clock()
            self.since_templates = 0
        else:
            self.since_templates += 1

    def failed(self, msg: Message) -> None:
        """msg was not sent: the collector may have missed templates too."""
        self.templates_sent = False
