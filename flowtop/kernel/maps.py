"""BPF map access over file descriptors: batch reads into numpy, element calls.

Everything userspace does with the programs' maps goes through here, with
raw bpf(2) calls (bpfsys.bpf) on map fds, whoever created the maps: keys and
values are numpy arrays in the layouts of flowtop.kernel.layout, read and
written as contiguous bytes (one syscall per chunk instead of two per key,
no per-entry ctypes). Per-CPU maps hold one value per possible CPU, each
rounded up to 8 bytes (the kernel's bpf_map_value_size()); possible_cpus()
says how many.

Calls raise OSError with the kernel's errno (bpfsys), except where the
kernel's answer is an expected outcome (ENOENT: no such key, end of a walk).
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct

import numpy as np

from flowtop.errors import KernelFeatureError
from flowtop.kernel import layout
from flowtop.kernel.bpfsys import (
    BPF_MAP_DELETE_BATCH,
    BPF_MAP_DELETE_ELEM,
    BPF_MAP_LOOKUP_AND_DELETE_BATCH,
    BPF_MAP_LOOKUP_BATCH,
    BPF_MAP_LOOKUP_ELEM,
    BPF_MAP_UPDATE_BATCH,
    BPF_MAP_UPDATE_ELEM,
    bpf,
)
from flowtop.kernel.cpus import cpu_ids as cpu_ids
from flowtop.kernel.cpus import possible_cpus as possible_cpus

# union bpf_attr for BPF_MAP_*_ELEM: map_fd u32 @0, key u64 @8, value u64 @16, flags u64 @24
_ELEM = struct.Struct("<IxxxxQQQ")
# and for BPF_MAP_*_BATCH: in_batch u64 @0, out_batch u64 @8, keys u64 @16,
# values u64 @24, count u32 @32, map_fd u32 @36, elem_flags u64 @40, flags u64 @48
_BATCH = struct.Struct("<QQQQIIQQ")
_COUNT_OFF = 32


def percpu(dtype: np.dtype) -> np.dtype:
    """The value layout of a per-CPU map of dtype values: one per possible CPU
    (flowtop's per-CPU values are all multiples of 8 bytes: no padding)."""
    assert dtype.itemsize % 8 == 0, dtype
    return np.dtype((dtype, (possible_cpus(),)))


def _addr(a: np.ndarray) -> int:
    addr: int = a.ctypes.data
    return addr


def lookup(fd: int, key: np.ndarray, value: np.ndarray) -> bool:
    """BPF_MAP_LOOKUP_ELEM into value; False when the key is not there."""
    attr = ct.create_string_buffer(_ELEM.size)
    _ELEM.pack_into(attr, 0, fd, _addr(key), _addr(value), 0)
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, attr)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def update(fd: int, key: np.ndarray, value: np.ndarray, flags: int = 0) -> None:
    """BPF_MAP_UPDATE_ELEM (flags: BPF_ANY 0, BPF_NOEXIST 1, BPF_EXIST 2)."""
    attr = ct.create_string_buffer(_ELEM.size)
    _ELEM.pack_into(attr, 0, fd, _addr(key), _addr(value), flags)
    bpf(BPF_MAP_UPDATE_ELEM, attr)


def delete(fd: int, key: np.ndarray) -> bool:
    """BPF_MAP_DELETE_ELEM; False when the key was not there."""
    attr = ct.create_string_buffer(_ELEM.size)
    _ELEM.pack_into(attr, 0, fd, _addr(key), 0, 0)
    try:
        bpf(BPF_MAP_DELETE_ELEM, attr)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def update_u32(fd: int, key: int, value: int) -> None:
    """One u32 -> u32 entry (array slots, map-in-map slots take an inner map fd)."""
    update(fd, np.array([key], dtype="<u4"), np.array([value], dtype="<u4"))


def _batch(
    cmd: int, fd: int, keys: int, values: int, count: int, in_batch: int = 0, out_batch: int = 0
) -> tuple[int, int]:
    """One batch call on raw addresses; (entries done, errno or 0). in_batch
    0 starts a walk from the beginning; lookups need an out_batch (8 bytes)
    for the cursor of the next call, updates and deletes take none."""
    attr = ct.create_string_buffer(_BATCH.size)
    _BATCH.pack_into(attr, 0, in_batch, out_batch, keys, values, count, fd, 0, 0)
    err = 0
    try:
        bpf(cmd, attr)
    except OSError as exc:
        err = exc.errno or errno.EIO
    done: int = struct.unpack_from("<I", attr, _COUNT_OFF)[0]
    return done, err


def update_batch(fd: int, keys: np.ndarray, values: np.ndarray) -> None:
    """BPF_MAP_UPDATE_BATCH of every (key, value), in as many calls as it takes."""
    keys = np.ascontiguousarray(keys)
    values = np.ascontiguousarray(values)
    ks, vs = keys.itemsize, values.itemsize
    done = 0
    while done < len(keys):
        n, err = _batch(
            BPF_MAP_UPDATE_BATCH, fd, _addr(keys) + done * ks, _addr(values) + done * vs,
            len(keys) - done,
        )  # fmt: skip
        done += n
        if err:
            raise OSError(err, os.strerror(err))


def delete_batch(fd: int, keys: np.ndarray) -> tuple[int, int]:
    """BPF_MAP_DELETE_BATCH of keys: (how many were deleted, errno of a failure
    or 0). A key that is not there (gone meanwhile: evicted, deleted by the
    program) is skipped; any other failure stops it there."""
    keys = np.ascontiguousarray(keys)
    size = keys.itemsize
    done = deleted = 0
    while done < len(keys):
        n, err = _batch(BPF_MAP_DELETE_BATCH, fd, _addr(keys) + done * size, 0, len(keys) - done)
        deleted += n
        done += n
        if err:
            if err != errno.ENOENT:
                return deleted, err
            done += 1  # that key is gone: the kernel stopped there
    return deleted, 0


class BatchReader:
    """Reads a whole hash map in one pass of BPF_MAP_LOOKUP_BATCH, or
    BPF_MAP_LOOKUP_AND_DELETE_BATCH with delete=True: one syscall per chunk
    instead of two per key, keys and values as contiguous bytes that numpy
    views without per-entry ctypes. The buffers are kept and grown as
    needed (fresh memory costs a page fault per 4 KiB, more than the
    decoding): what read() returns are views, valid until the next read()."""

    def __init__(
        self,
        capacity: int,
        key_dtype: np.dtype,
        val_dtype: np.dtype,
        delete: bool = False,
        what: str = "a BPF map",
    ) -> None:
        self._cmd = BPF_MAP_LOOKUP_AND_DELETE_BATCH if delete else BPF_MAP_LOOKUP_BATCH
        self._what = what
        self._keys = np.zeros(max(capacity, 1), dtype=key_dtype)
        self._vals = np.zeros(max(capacity, 1), dtype=val_dtype)
        self._batch = ct.create_string_buffer(16)  # in_batch, out_batch cursors

    def _grow(self, keep: int) -> None:
        # A per-CPU value dtype (percpu()) makes _vals 2-D, (entries, cpus):
        # keep its trailing shape.
        keys = np.zeros(2 * len(self._keys), dtype=self._keys.dtype)
        vals = np.zeros((2 * len(self._vals), *self._vals.shape[1:]), dtype=self._vals.dtype)
        keys[:keep] = self._keys[:keep]
        vals[:keep] = self._vals[:keep]
        self._keys, self._vals = keys, vals

    def read(self, fd: int) -> tuple[np.ndarray, np.ndarray]:
        cursor = ct.addressof(self._batch)  # in_batch, then out_batch
        in_batch = 0  # the first call starts from the beginning
        total = 0
        # Bytes per entry: a per-CPU value's row holds one value per CPU.
        ks, vs = self._keys.strides[0], self._vals.strides[0]
        while True:
            if total == len(self._keys):
                self._grow(total)
            n, err = _batch(
                self._cmd, fd, _addr(self._keys) + total * ks, _addr(self._vals) + total * vs,
                len(self._keys) - total, in_batch, cursor + 8,
            )  # fmt: skip
            total += n
            if err:
                if err == errno.ENOENT:
                    break
                if err == errno.ENOSPC and n == 0:
                    self._grow(total)  # one hash bucket holds more than the room left
                    continue
                raise KernelFeatureError(f"reading {self._what} failed: {os.strerror(err)}")
            ct.memmove(cursor, cursor + 8, 8)  # the next call goes on from out_batch
            in_batch = cursor
        return self._keys[:total], self._vals[:total]


class CacheDrainer:
    """Reads a flow cache (bpf/tc.c cache_a or cache_b: a plain array of
    cpu_ids() rows of `slots` entries, row = CPU id) with one batch lookup
    and zeroes it with one batch update. Returns one (keys, stats) pair per
    CPU that has any: each CPU's slots hold distinct flows, but one flow can
    sit in several CPUs' caches."""

    def __init__(self, slots: int) -> None:
        self._rows = cpu_ids()
        self._n = self._rows * slots
        self._keys = np.arange(self._n, dtype=np.uint32)
        self._vals = np.zeros(self._n, dtype=layout.FLOW_CACHE_ENTRY)
        self._zeros = np.zeros(self._n, dtype=layout.FLOW_CACHE_ENTRY)
        self._out_keys = np.zeros(self._n, dtype=np.uint32)
        self._batch = ct.create_string_buffer(8)  # out_batch

    def drain(self, fd: int) -> list[tuple[np.ndarray, np.ndarray]]:
        n, err = _batch(
            BPF_MAP_LOOKUP_BATCH, fd, _addr(self._out_keys), _addr(self._vals), self._n,
            0, ct.addressof(self._batch),
        )  # fmt: skip
        if err and err != errno.ENOENT:
            raise KernelFeatureError(f"reading the flow cache failed: {os.strerror(err)}")
        if n != self._n:
            raise KernelFeatureError(f"reading the flow cache returned {n} of {self._n} slots")
        out = []
        for row in self._vals.reshape(self._rows, -1):
            used = row[row["stats"]["packets"] > 0]
            if len(used):
                out.append((used["key"].copy(), used["stats"].copy()))
        try:
            update_batch(fd, self._keys, self._zeros)
        except OSError as exc:
            raise KernelFeatureError(f"clearing the flow cache failed: {exc.strerror}") from None
        return out


def read_rows(fd: int, first: int, count: int, row: int, vals: np.ndarray) -> None:
    """Entries first .. first + count - 1 of every row of a plain array of
    len(vals) rows of `row` entries each (bpf/tc.c's per-CPU plain arrays,
    row = CPU id) into vals, shape (rows, count): one batch lookup a row."""
    keys = np.zeros(count, dtype=np.uint32)
    batch = ct.create_string_buffer(8)
    start = ct.create_string_buffer(8)
    for r in range(len(vals)):
        key = r * row + first
        # An array's batch read starts after in_batch's key (none: at 0).
        if key:
            struct.pack_into("<I", start, 0, key - 1)
        n, err = _batch(
            BPF_MAP_LOOKUP_BATCH, fd, _addr(keys), _addr(vals[r]), count,
            ct.addressof(start) if key else 0, ct.addressof(batch),
        )  # fmt: skip
        if (err and err != errno.ENOENT) or n != count:
            raise OSError(err or errno.EINVAL, f"read {n} of {count} entries at {key}")


def percpu_sums(fd: int, slots: int) -> list[int]:
    """Per slot of a per-CPU array of u64 counters, the sum over CPUs."""
    vals = np.zeros((slots, possible_cpus()), dtype="<u8")
    out_keys = np.zeros(slots, dtype=np.uint32)
    batch = ct.create_string_buffer(8)
    n, err = _batch(
        BPF_MAP_LOOKUP_BATCH, fd, _addr(out_keys), _addr(vals), slots, 0, ct.addressof(batch)
    )
    if err and err != errno.ENOENT:
        raise OSError(err, os.strerror(err))
    if n != slots:
        # An array batch read stops early only when asked for more than it has.
        raise OSError(errno.EINVAL, f"read {n} of {slots} counter slots")
    sums: list[int] = vals.sum(axis=1, dtype=np.uint64).tolist()
    return sums
