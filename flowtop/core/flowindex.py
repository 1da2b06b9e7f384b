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

import numpy as np

EMPTY = -1
TOMBSTONE = -2  # a deleted entry: probing continues past it
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


class FlowIndex:
    def __init__(self, capacity: int) -> None:
        self._slots = np.full(0, EMPTY, dtype=np.int32)
        self._mask = 0
        self._used = 0  # live entries + tombstones
        self._live = 0
        # int32: the slot array has at most 2^27 entries (max_flows <= 50M, config.py).
        self._slot_of_row = np.zeros(0, dtype=np.int32)
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
        n = len(words)
        rows = np.full(n, -1, dtype=np.int64)
        pending = np.arange(n)
        slot = (hashes & np.uint64(self._mask)).astype(np.int64)
        slots = self._slots
        while len(pending):
            s = slots[slot]
            hit = s >= 0
            if hit.any():
                cand = np.flatnonzero(hit)
                same = (table[s[cand]] == words[pending[cand]]).all(axis=1)
                found = cand[same]
                rows[pending[found]] = s[found]
                hit[found] = True
                hit[cand[~same]] = False
            done = hit | (s == EMPTY)
            keep = ~done
            pending = pending[keep]
            slot = (slot[keep] + 1) & self._mask
        return rows

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
