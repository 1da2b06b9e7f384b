"""layout.KeyWords: word, shift and mask of every key member derived from the
dtype (not a table), checked against numpy's own structured view of the same
bytes, and rejected when a member cannot be read from one word."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flowtop.kernel import layout
from flowtop.kernel.layout import KeyField, KeyWords

# FLOW_KEY with an 8-byte member in front and direction/ip_version swapped:
# every word index moves by one, and two shifts trade places.
SHIFTED = np.dtype(
    [
        ("cookie", "<u8"),
        ("ifindex", "<u4"),
        ("ip_version", "u1"),
        ("direction", "u1"),
        ("proto", "u1"),
        ("pad0", "u1"),
        ("src", "V16"),
        ("dst", "V16"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("vlan", "<u2"),
        ("pad1", "<u2"),
    ]
)


def random_keys(dtype: np.dtype, n: int = 257) -> np.ndarray:
    """n records of random bytes (every member, padding included, non-trivial)."""
    rng = np.random.default_rng(12)
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype)


def test_flow_key_words_are_derived() -> None:
    k = layout.FLOW_KEY_WORDS
    assert k.count == 6
    assert k.fields["ifindex"] == KeyField(0, 0, 0xFFFF_FFFF)
    assert k.fields["ip_version"] == KeyField(0, 40, 0xFF)
    assert k.fields["dport"] == KeyField(5, 16, 0xFFFF)
    assert k.spans == {"src": slice(1, 3), "dst": slice(3, 5)}
    assert set(k.fields) | set(k.spans) == set(layout.FLOW_KEY.names)


def test_a_shifted_dtype_moves_every_constant() -> None:
    base, moved = layout.FLOW_KEY_WORDS, KeyWords.of(SHIFTED)
    assert moved.count == base.count + 1
    for name, f in base.fields.items():
        want_shift = {"direction": 40, "ip_version": 32}.get(name, f.shift)
        assert moved.fields[name] == KeyField(f.word + 1, want_shift, f.mask), name
    assert moved.fields["cookie"] == KeyField(0, 0, 0xFFFF_FFFF_FFFF_FFFF)
    assert moved.spans == {"src": slice(2, 4), "dst": slice(4, 6)}
    assert not np.array_equal(moved.mask(("direction",))[1:], base.mask(("direction",)))


@pytest.mark.parametrize("dtype", [layout.FLOW_KEY, SHIFTED], ids=["FLOW_KEY", "shifted"])
def test_extractors_agree_with_the_structured_view(dtype: np.dtype) -> None:
    kw = KeyWords.of(dtype)
    keys = random_keys(dtype)
    words = kw.view(keys)
    assert words.shape == (len(keys), kw.count) and words.dtype == np.uint64
    for name in kw.fields:
        assert np.array_equal(kw.field(words, name), keys[name].astype(np.uint64)), name
    for name in kw.spans:
        got = np.ascontiguousarray(kw.span(words, name)).view("V16").ravel()
        assert np.array_equal(got, keys[name]), name


@pytest.mark.parametrize("dtype", [layout.FLOW_KEY, SHIFTED], ids=["FLOW_KEY", "shifted"])
def test_mask_keeps_exactly_the_named_members(dtype: np.dtype) -> None:
    kw = KeyWords.of(dtype)
    keys = random_keys(dtype)
    kept = ("ip_version", "src", "sport")
    out = (kw.view(keys) & kw.mask(kept)).view(dtype).ravel()
    for name in dtype.names or ():
        if name in kept:
            assert np.array_equal(out[name], keys[name]), name
        else:
            assert not np.any(np.ascontiguousarray(out[name]).view(np.uint8)), name


@pytest.mark.parametrize("dtype", [layout.FLOW_KEY, SHIFTED], ids=["FLOW_KEY", "shifted"])
def test_reversed_swaps_ends_and_ports_only(dtype: np.dtype) -> None:
    kw = KeyWords.of(dtype)
    keys = random_keys(dtype)
    words = kw.view(keys)
    before = words.copy()
    rev = kw.reversed(words).view(dtype).ravel()
    assert np.array_equal(words, before)  # the input is left alone
    swap = {"src": "dst", "dst": "src", "sport": "dport", "dport": "sport"}
    for name in dtype.names or ():
        assert np.array_equal(rev[name], keys[swap.get(name, name)]), name
    assert np.array_equal(kw.reversed(kw.reversed(words)), words)


def test_set_field_writes_one_member() -> None:
    kw = layout.FLOW_KEY_WORDS
    keys = random_keys(layout.FLOW_KEY)
    words = kw.view(keys).copy()
    kw.set_field(words, "dport", np.arange(len(keys)))
    out = words.view(layout.FLOW_KEY).ravel()
    assert np.array_equal(out["dport"], np.arange(len(keys)))
    for name in layout.FLOW_KEY.names:
        if name != "dport":
            assert np.array_equal(out[name], keys[name]), name


def test_view_refuses_keys_of_another_size() -> None:
    with pytest.raises(TypeError, match="40-byte keys, not 48"):
        layout.FLOW_KEY_WORDS.view(np.zeros(2, dtype=layout.TCP_CONN_KEY))


def test_a_member_inside_one_word_is_accepted() -> None:
    """The control for the next test: a port at bytes 6..8 ends in word 0."""
    kw = KeyWords.of(np.dtype([("a", "<u4"), ("b", "u1"), ("c", "u1"), ("port", "<u2")]))
    assert kw.fields["port"] == KeyField(0, 48, 0xFFFF)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # one byte more in front: the port takes bytes 7..9, across two words
        ([("a", "<u4"), ("b", "u1"), ("c", "u1"), ("d", "u1"), ("port", "<u2"), ("pad", "V7")],
         "key member port (bytes 7..9) straddles a 64-bit word"),
        ([("a", "<u4"), ("addr", "V16"), ("pad", "V4")],
         "key member addr (bytes 4..20) is not whole words"),
        ([("a", ">u4"), ("pad", "V4")], "key member a is not little-endian"),
        ([("a", "<u4"), ("b", "<u2")], "a 6-byte key is not whole words"),
        ([("a", "<f8")], "key member a is not an integer"),
    ],
)  # fmt: skip
def test_members_that_are_not_one_word_are_refused(
    fields: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        KeyWords.of(np.dtype(fields))
