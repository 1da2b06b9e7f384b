"""A consumer of a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF), with mmap, no bcc.

The kernel (kernel/bpf/ringbuf.c) lets userspace map a ring buffer map's fd
in two parts: at offset 0 one page holding the consumer position, which the
consumer writes (mapped read-write), and from offset one page on, one page
holding the producer position followed by the data area, mapped twice in a
row so that a record that wraps past the end reads as one slice (mapped
read-only). Positions are 64-bit byte counts that only grow; a position's
place in the data area is position & (size - 1).

Each record starts with an 8-byte header: a u32 length whose bit 31 (BUSY)
says the producer has reserved the record but not committed it, whose bit
30 (DISCARD) says it was discarded, then a u32 page offset the kernel uses
to find its ring. The record takes (length + 8) rounded up to 8 bytes. A
reader stops at a busy record (later ones may be committed already, but the
consumer position must pass them in order), skips discarded ones, and moves
the consumer position past every record it took, which frees the room.

Store order: the producer position and a record's length are read before
the record's bytes, and the consumer position is written after they were
copied (the kernel's smp_load_acquire / smp_store_release pairs). On
x86-64, where flowtop runs, plain aligned 8-byte loads and stores give
exactly that order (TSO); Python's memoryview casts do such accesses.
"""

from __future__ import annotations

import mmap
import os

from flowtop.errors import KernelFeatureError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_LENGTH_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFF_FFFF
MAP_TYPE_RINGBUF = 27  # enum bpf_map_type


def _fdinfo(fd: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


class MalformedRecord(Exception):
    """A record header that cannot be: a length past the ring's size."""


class RingParser:
    """Reads committed records from a ring laid out as the kernel lays it out.

    consumer: 8 bytes or more whose first u64 is the consumer position
    (written here); producer: the producer position's page followed by the
    data area twice (size bytes each), read only. RingBuffer gives it the
    kernel's mappings; tests give it bytearrays laid out the same way.
    """

    def __init__(self, consumer: memoryview, producer: memoryview, size: int, page: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring size {size} is not a power of two")
        self._cons = consumer[:8].cast("Q")
        self._prod = producer[:8].cast("Q")
        self._data = producer[page : page + 2 * size]
        self._words = self._data.cast("I")  # records start 8-aligned: their length words
        self._size = size
        self._mask = size - 1

    def pending(self) -> int:
        """Bytes between the consumer and the producer position."""
        return int(self._prod[0] - self._cons[0])

    def read(self, max_records: int) -> list[bytes]:
        """Up to max_records committed records' bytes (copies), in order; the
        consumer position moves past each record taken, discarded ones
        included. Raises MalformedRecord (position left at that record)."""
        span, offsets, lengths = self.read_span(max_records)
        return [span[at : at + n] for at, n in zip(offsets, lengths, strict=True)]

    def read_span(self, max_records: int) -> tuple[bytes, list[int], list[int]]:
        """read()'s records without a copy each: one copy of the ring bytes
        they span (headers and padding included), each record's offset in
        it and its length (discarded records left out). The headers are
        read first, one by one, then the span copied, then the consumer
        position moved once past it: a record's bytes are copied only after
        its header said it was committed (the order read() needs), and the
        room is freed after the copy. Raises MalformedRecord (the records
        before it are consumed and lost, the position left at it)."""
        offsets: list[int] = []
        lengths: list[int] = []
        start = cons = int(self._cons[0])
        prod = int(self._prod[0])  # acquire: records before it are visible
        words, mask, size = self._words, self._mask, self._size
        add_offset, add_length = offsets.append, lengths.append
        left = max_records  # records still to take (len(offsets) counted down)
        while cons < prod and left > 0:
            word = words[(cons & mask) >> 2]  # one aligned u32 load: the length word
            if word & BUSY_BIT:
                break  # reserved, not committed yet: the ones after wait for it
            length = word & _LENGTH_MASK
            total = (length + HEADER + 7) & ~7
            if total > size or cons + total > prod:
                self._cons[0] = cons
                raise MalformedRecord(f"record of {length} bytes at position {cons}")
            if not word & DISCARD_BIT:
                add_offset(cons - start + HEADER)
                add_length(length)
                left -= 1
            cons += total
        if cons == start:
            return b"", offsets, lengths
        at = start & mask
        span = bytes(self._data[at : at + cons - start])  # within the double mapping
        self._cons[0] = cons  # release: after the copy
        return span, offsets, lengths

    def release(self) -> None:
        self._words.release()
        self._cons.release()
        self._prod.release()
        self._data.release()


class RingBuffer:
    """A BPF ring buffer map, by fd (duplicated: the caller keeps its own):
    read() the committed records, fileno() to poll (readable when records
    are there), close()."""

    def __init__(self, fd: int) -> None:
        info = _fdinfo(fd)
        if int(info.get("map_type", -1)) != MAP_TYPE_RINGBUF:
            raise KernelFeatureError(f"map fd {fd} is not a ring buffer")
        self.size = int(info["max_entries"])
        page = mmap.PAGESIZE
        self._fd = os.dup(fd)
        try:
            self._consumer = mmap.mmap(
                self._fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
            )
            self._producer = mmap.mmap(
                self._fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
            )
        except OSError as exc:
            os.close(self._fd)
            raise KernelFeatureError(f"cannot map the ring buffer: {exc.strerror}") from None
        self._parser = RingParser(
            memoryview(self._consumer), memoryview(self._producer), self.size, page
        )
        self._closed = False

    def fileno(self) -> int:
        return self._fd

    def pending(self) -> int:
        return self._parser.pending()

    def read(self, max_records: int) -> list[bytes]:
        return self._parser.read(max_records)

    def read_span(self, max_records: int) -> tuple[bytes, list[int], list[int]]:
        return self._parser.read_span(max_records)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._parser.release()
        self._consumer.close()
        self._producer.close()
        os.close(self._fd)
