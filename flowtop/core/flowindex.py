"""A vectorised hash index from 48-byte flow keys to table rows.

Open addressing with linear probing in one int32 numpy array, every
operation done for a whole batch of keys at once: a dict of bytes keys
costs ~180 bytes and a Python-level lookup per flow, this costs ~12 bytes
per flow and a few numpy passes per batch.

Keys are given as (n, 6) uint64 word views of layout.FLOW_KEY records; the
index stores only row numbers and compares against the table's own key
array, which the caller passes in (it moves when the table grows).
"""

from __future__ import annotations

import threading

import numpy as np

EMPTY = -1
TOMBSTONE = -2  # a deleted entry: probing continues past it
CHUNK = 2048  # keys compared at a time in lookup's first probe: 96 KiB of gathered keys
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_S = np.uint64(31)


def hash_words(words: np.ndarray) -> np.ndarray:
    """64-bit hash of each row of an (n, 6) uint64 array."""
    h = np.zeros(len(words), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(words.shape[1]):
            h ^= words[:, i]
            h *= _M1
            h ^= h >> _S
        h *= _M2
        h ^= h >> _S
    return h


def _same_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row, whether two (n, words) uint64 arrays hold the same key.

    A word at a time (XOR, OR): numpy's (a == b).all(axis=1) over six-word
    rows costs about twice as much.
    """
    diff = a[:, 0] ^ b[:, 0]
    for i in range(1, a.shape[1]):
        diff |= a[:, i] ^ b[:, i]
    out: np.ndarray = diff == 0
    return out


class FlowIndex:
    def __init__(self, capacity: int) -> None:
        self._slots = np.full(0, EMPTY, dtype=np.int32)
        self._mask = 0
        self._used = 0  # live entries + tombstones
        self._live = 0
        # int32: the slot array has at most 2^27 entries (max_flows <= 50M, config.py).
        self._slot_of_row = np.zeros(0, dtype=np.int32)
        self._scratch = np.zeros((0, 0), dtype=np.uint64)  # _same's gathered keys
        # Held while a lookup uses _scratch: lookups are read-only, so two
        # threads may look up at once; the second then takes a buffer of its own.
        self._scratch_lock = threading.Lock()
        self._resize_table(capacity)
        self.reserve_rows(capacity)

    def __len__(self) -> int:
        return self._live

    def reserve_rows(self, rows: int) -> None:
        if rows > len(self._slot_of_row):
            grown = np.full(rows, -1, dtype=np.int32)
            grown[: len(self._slot_of_row)] = self._slot_of_row
            self._slot_of_row = grown

    def _resize_table(self, capacity: int) -> None:
        size = 1 << max(4, (2 * max(capacity, 1) - 1).bit_length())  # load <= 0.5
        self._slots = np.full(size, EMPTY, dtype=np.int32)
        self._mask = size - 1
        self._used = 0

    def lookup(self, words: np.ndarray, hashes: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Row of each key, -1 where absent. table: (rows, 6) uint64 key words."""
        mask = np.uint64(self._mask)
        slot = (hashes & mask).astype(np.int64)
        # The first probe of every key at once and in key order (most keys
        # end there: the load is at most 3/4 and a drained key is mostly in
        # the table already); the few that probe on go through the loop.
        s = self._slots[slot]
        rows = s.astype(np.int64)
        hit = rows >= 0
        found = self._same(table, np.where(hit, rows, 0), words)
        found &= hit
        rows[~found] = -1
        pending = np.flatnonzero(~found & (s != EMPTY))  # a tombstone or another key's row
        slot = (slot[pending] + 1) & self._mask
        slots = self._slots
        while len(pending):
            s = slots[slot]
            keep = s != EMPTY
            cand = np.flatnonzero(s >= 0)
            if len(cand):
                at = pending[cand]
                # take(): a row gather several times cheaper than fancy indexing
                same = _same_keys(np.take(table, s[cand], axis=0), np.take(words, at, axis=0))
                found_at = cand[same]
                rows[at[same]] = s[found_at]
                keep[found_at] = False
            pending = pending[keep]
            slot = (slot[keep] + 1) & self._mask
        return rows

    def _same(self, table: np.ndarray, rows: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Whether table[rows[i]] is words[i], for every i.

        The gathered keys go through one scratch buffer of CHUNK rows, kept:
        a fresh (n, 6) array per lookup is above glibc's mmap threshold from
        2,731 keys on (run/malloc.py fixes it at 128 KiB), so its pages were
        faulted in again at every merge.
        """
        n, width = words.shape
        if len(table) == 0:
            return np.zeros(n, dtype=bool)  # an index over no keys yet: nothing to gather
        if not self._scratch_lock.acquire(blocking=False):
            return self._compare(table, rows, words, np.empty((CHUNK, width), table.dtype))
        try:
            if self._scratch.shape[1] != width or self._scratch.dtype != table.dtype:
                self._scratch = np.zeros((CHUNK, width), dtype=table.dtype)
            return self._compare(table, rows, words, self._scratch)
        finally:
            self._scratch_lock.release()

    @staticmethod
    def _compare(
        table: np.ndarray, rows: np.ndarray, words: np.ndarray, scratch: np.ndarray
    ) -> np.ndarray:
        n = len(words)
        out = np.empty(n, dtype=bool)
        for start in range(0, n, CHUNK):
            end = min(n, start + CHUNK)
            got = scratch[: end - start]
            np.take(table, rows[start:end], axis=0, out=got, mode="clip")  # rows are valid
            out[start:end] = _same_keys(got, words[start:end])
        return out

    def insert(self, hashes: np.ndarray, rows: np.ndarray, table: np.ndarray) -> None:
        """Add keys known to be absent (and distinct) at the given rows.

        table: the (rows, 6) key words, to rehash live keys when rebuilding.
        """
        if self._used + len(rows) > (len(self._slots) * 3) // 4:
            self._rebuild(self._live + len(rows), table)
        self._place(hashes, rows)
        self._live += len(rows)

    def _place(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        slots = self._slots
        pending = np.arange(len(rows))
        slot = (hashes & np.uint64(self._mask)).astype(np.int64)
        reused = 0
        while len(pending):
            s = slots[slot]
            free = np.flatnonzero(s < 0)
            if len(free):
                # Several keys may want one free slot: the first of each wins.
                uniq, first = np.unique(slot[free], return_index=True)
                winners = free[first]
                reused += int((slots[uniq] == TOMBSTONE).sum())
                slots[uniq] = rows[pending[winners]]
                self._slot_of_row[rows[pending[winners]]] = uniq
                keep = np.ones(len(pending), dtype=bool)
                keep[winners] = False
            else:
                keep = np.ones(len(pending), dtype=bool)
            pending = pending[keep]
            slot = (slot[keep] + 1) & self._mask
        self._used += len(rows) - reused

    def delete(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self._slots[self._slot_of_row[rows]] = TOMBSTONE
        self._slot_of_row[rows] = -1
        self._live -= len(rows)

    def _rebuild(self, capacity: int, table: np.ndarray) -> None:
        """New table sized for capacity live keys; drops tombstones."""
        live_rows = np.flatnonzero(self._slot_of_row >= 0)
        self._resize_table(capacity)
        self._slot_of_row[:] = -1
        if len(live_rows):
            self._place(hash_words(table[live_rows]), live_rows)
