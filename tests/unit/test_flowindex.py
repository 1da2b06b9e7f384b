"""FlowIndex against a dict, through inserts, deletes, tombstones and rebuilds."""

from __future__ import annotations

import numpy as np

from flowtop.core.flowindex import FlowIndex, hash_words


def test_matches_a_dict_through_random_churn() -> None:
    rng = np.random.default_rng(7)
    cap = 4096
    table = np.zeros((cap, 6), dtype=np.uint64)
    index = FlowIndex(16)  # tiny: forces rebuilds and long probe chains
    index.reserve_rows(cap)
    truth: dict[bytes, int] = {}
    free = list(range(cap))
    # few distinct values per word: many keys share words, hashes still differ
    universe = rng.integers(0, 4, size=(3000, 6), dtype=np.uint64)
    universe = np.unique(universe, axis=0)
    for _ in range(60):
        batch = universe[rng.choice(len(universe), size=200, replace=False)]
        h = hash_words(batch)
        rows = index.lookup(batch, h, table)
        expect = np.array([truth.get(b.tobytes(), -1) for b in batch])
        assert np.array_equal(rows, expect)
        new = np.flatnonzero(rows < 0)
        new_rows = np.array([free.pop() for _ in new], dtype=np.int64)
        table[new_rows] = batch[new]
        index.insert(h[new], new_rows, table)
        for i, r in zip(new, new_rows, strict=True):
            truth[batch[i].tobytes()] = int(r)
        assert len(index) == len(truth)
        # delete a random third of what is there
        live = np.array(sorted(truth.values()), dtype=np.int64)
        gone = rng.choice(live, size=len(live) // 3, replace=False)
        index.delete(gone)
        gone_set = set(gone.tolist())
        truth = {k: v for k, v in truth.items() if v not in gone_set}
        free.extend(int(g) for g in gone)
        table[gone] = 0xFFFF  # stale contents must never match
    everything = universe
    rows = index.lookup(everything, hash_words(everything), table)
    expect = np.array([truth.get(b.tobytes(), -1) for b in everything])
    assert np.array_equal(rows, expect)


def test_hash_depends_on_every_word() -> None:
    base = np.zeros((1, 6), dtype=np.uint64)
    hashes = {int(hash_words(base)[0])}
    for i in range(6):
        k = base.copy()
        k[0, i] = 1
        hashes.add(int(hash_words(k)[0]))
    assert len(hashes) == 7


def test_batches_longer_than_a_chunk_match_a_dict() -> None:
    # lookup's first probe compares keys CHUNK at a time: batches of several
    # chunks and a ragged end, keys present, absent and deleted.
    from flowtop.core.flowindex import CHUNK

    rng = np.random.default_rng(11)
    n = 3 * CHUNK + 123
    keys = np.unique(rng.integers(0, 1 << 62, size=(2 * n, 6), dtype=np.uint64), axis=0)
    rng.shuffle(keys)
    table = np.zeros((n, 6), dtype=np.uint64)
    index = FlowIndex(n)
    table[:] = keys[:n]
    index.insert(hash_words(table), np.arange(n), table)
    gone = rng.choice(n, size=n // 5, replace=False)
    index.delete(gone)
    truth = {keys[i].tobytes(): i for i in range(n) if i not in set(gone.tolist())}
    batch = keys[rng.permutation(len(keys))[: n + CHUNK // 2]]  # present and absent mixed
    rows = index.lookup(batch, hash_words(batch), table)
    expect = np.array([truth.get(b.tobytes(), -1) for b in batch])
    assert 0 < (expect >= 0).sum() < len(batch)
    assert np.array_equal(rows, expect)


def test_lookup_in_an_empty_table() -> None:
    index = FlowIndex(16)
    keys = np.arange(12, dtype=np.uint64).reshape(2, 6)
    rows = index.lookup(keys, hash_words(keys), np.zeros((0, 6), dtype=np.uint64))
    assert rows.tolist() == [-1, -1]


def test_a_lookup_while_another_holds_the_scratch_buffer() -> None:
    # Two threads may look up at once: the one that finds the shared
    # buffer taken compares through a buffer of its own, same answers.
    from flowtop.core.flowindex import CHUNK

    rng = np.random.default_rng(5)
    n = 2 * CHUNK + 7
    table = np.unique(rng.integers(0, 1 << 62, size=(n, 6), dtype=np.uint64), axis=0)
    index = FlowIndex(len(table))
    index.insert(hash_words(table), np.arange(len(table)), table)
    absent = rng.integers(0, 1 << 62, size=(50, 6), dtype=np.uint64)
    batch = np.concatenate([table[::-1], absent])
    expect = np.concatenate([np.arange(len(table))[::-1], np.full(50, -1)])
    assert np.array_equal(index.lookup(batch, hash_words(batch), table), expect)
    with index._scratch_lock:  # as if another thread were inside lookup
        assert np.array_equal(index.lookup(batch, hash_words(batch), table), expect)
