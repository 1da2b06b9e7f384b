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
