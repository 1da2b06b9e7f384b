"""WireNames: DNS and connection entries joined to flow keys (both
directions, the server end named, SNI over DNS), TTL and idle expiry on a
fake clock, bounds, threads, and the join over 100k flows."""

from __future__ import annotations

import ipaddress
import threading

import numpy as np

from flowtop.core.owners import flow_tuple_words
from flowtop.kernel.layout import FLOW_KEY
from flowtop.wirenames.names import (
    SOURCE_DNS,
    SOURCE_HTTP,
    SOURCE_NONE,
    SOURCE_SNI,
    WireNames,
    conn_key,
)
from tests.unit.wirenames_bytes import flow_key


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _keys(*keys: bytes) -> np.ndarray:
    return np.frombuffer(b"".join(keys), dtype=FLOW_KEY)


def _ip(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def _names(w: WireNames, ids: np.ndarray) -> list[str | None]:
    return [w.names.get(int(i)) if i else None for i in ids]


def test_conn_key_is_the_owner_tuple_words_of_the_key() -> None:
    for k in (
        flow_key("10.0.0.1", "10.0.0.2", 40000, 443),
        flow_key("2001:db8::1", "2001:db8::2", 5, 6, 17),
    ):
        fwd, _rev = flow_tuple_words(_keys(k))
        assert conn_key(k) == fwd[0].tobytes()


def test_dns_names_the_answered_address_in_both_directions_until_the_ttl() -> None:
    clock = Clock()
    w = WireNames(clock=clock)
    w.add_answer(4, _ip("10.0.0.5"), _ip("192.0.2.80"), "www.example.com", "edge.cdn.test", 60)
    keys = _keys(
        flow_key("10.0.0.5", "192.0.2.80", 40000, 443),  # client -> answered address
        flow_key("192.0.2.80", "10.0.0.5", 443, 40000, direction=1),  # the reply
        flow_key("10.0.0.6", "192.0.2.80", 40000, 443),  # another client did not ask
        flow_key("10.0.0.5", "192.0.2.81", 40000, 443),  # another address
    )
    c = w.join(keys)
    assert _names(w, c.dst_name) == ["www.example.com", None, None, None]
    assert _names(w, c.src_name) == [None, "www.example.com", None, None]
    assert _names(w, c.cname) == ["edge.cdn.test", "edge.cdn.test", None, None]
    assert c.source.tolist() == [SOURCE_DNS, SOURCE_DNS, SOURCE_NONE, SOURCE_NONE]
    clock.t += 60
    assert w.join(keys).source.tolist()[:2] == [SOURCE_DNS, SOURCE_DNS]  # at the TTL: still
    clock.t += 0.5
    c = w.join(keys)
    assert not c.named.any() and w.counters()["dns_entries"] == 0
    assert w.counters()["expired"] == 1


def test_a_newer_answer_replaces_the_name_and_ttl() -> None:
    clock = Clock()
    w = WireNames(clock=clock)
    w.add_answer(4, _ip("10.0.0.5"), _ip("192.0.2.80"), "old.test", None, 30)
    w.add_answer(4, _ip("10.0.0.5"), _ip("192.0.2.80"), "new.test", None, 300)
    clock.t += 100
    c = w.join(_keys(flow_key("10.0.0.5", "192.0.2.80", 1, 2)))
    assert _names(w, c.dst_name) == ["new.test"] and w.counters()["dns_entries"] == 1


def test_sni_names_the_exact_connection_over_dns_and_lives_while_joined() -> None:
    clock = Clock()
    w = WireNames(idle_timeout=10, clock=clock)
    w.add_answer(6, _ip("2001:db8::5"), _ip("2001:db8::80"), "dns.test", None, 3600)
    hello = flow_key("2001:db8::5", "2001:db8::80", 50000, 443)
    w.add_connection(hello, "sni.test", SOURCE_SNI)
    w.add_connection(flow_key("2001:db8::5", "2001:db8::81", 50001, 80), "web.test", SOURCE_HTTP)
    keys = _keys(
        hello,
        flow_key(
            "2001:db8::80", "2001:db8::5", 443, 50000, ifindex=9, direction=1
        ),  # reply, other iface
        flow_key("2001:db8::5", "2001:db8::80", 50002, 443),  # another connection: DNS only
        flow_key("2001:db8::81", "2001:db8::5", 80, 50001),
    )
    for _ in range(5):  # joined every 5 s: kept alive past the 10 s idle timeout
        c = w.join(keys)
        clock.t += 5
    assert _names(w, c.dst_name) == ["sni.test", None, "dns.test", None]
    assert _names(w, c.src_name) == [None, "sni.test", None, "web.test"]
    assert c.source.tolist() == [SOURCE_SNI, SOURCE_SNI, SOURCE_DNS, SOURCE_HTTP]
    clock.t += 11
    c = w.join(keys)
    assert c.source.tolist() == [SOURCE_DNS, SOURCE_DNS, SOURCE_DNS, SOURCE_NONE]


def test_bounded_and_evictions_counted() -> None:
    clock = Clock()
    w = WireNames(max_entries=100, clock=clock)
    for i in range(250):
        clock.t += 1
        w.add_answer(4, _ip("10.0.0.1"), i.to_bytes(4, "big"), f"n{i}.test", None, 3600)
    cnt = w.counters()
    assert cnt["dns_entries"] <= 100 and cnt["evicted"] == 250 - cnt["dns_entries"]
    # the newest are kept
    c = w.join(
        _keys(flow_key("10.0.0.1", "0.0.0.249", 1, 2), flow_key("10.0.0.1", "0.0.0.0", 1, 2))
    )
    assert _names(w, c.dst_name) == ["n249.test", None]


def _many(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    keys = np.zeros(n, dtype=FLOW_KEY)
    keys["ip_version"], keys["proto"] = 4, 6
    src = rng.integers(0, 2**32, n, dtype=np.uint64).astype("<u4")
    dst = rng.integers(0, 2**32, n, dtype=np.uint64).astype("<u4")
    for col, a in (("src", src), ("dst", dst)):
        raw = np.zeros((n, 16), dtype=np.uint8)
        raw[:, :4] = a.view(np.uint8).reshape(n, 4)
        keys[col] = raw.view("V16").ravel()
    keys["sport"] = rng.integers(1024, 65535, n)
    keys["dport"] = 443
    return keys, dst


def test_join_of_100k_flows_against_a_full_table() -> None:
    rng = np.random.default_rng(1)
    n = 100_000
    keys, _dst = _many(n, rng)
    w = WireNames(max_entries=65536, clock=Clock())
    named = rng.choice(n, 30_000, replace=False)
    by_sni = named[:10_000]
    kb = keys.tobytes()
    for i in named.tolist():
        k = kb[i * 48 : (i + 1) * 48]
        w.add_answer(4, k[24:40], k[8:24], f"dns{i}.test", None, 600)  # the dst asked: src named
    for i in by_sni.tolist():
        w.add_connection(kb[i * 48 : (i + 1) * 48], f"sni{i}.test", SOURCE_SNI)
    c = w.join(keys)
    want_src = np.zeros(n, dtype=object)
    want_src[named] = [f"dns{i}.test" for i in named.tolist()]
    got_src = np.array(_names(w, c.src_name), dtype=object)
    got_dst = np.array(_names(w, c.dst_name), dtype=object)
    assert (got_src[named] == want_src[named]).all()
    assert list(got_dst[by_sni]) == [f"sni{i}.test" for i in by_sni.tolist()]
    other = np.setdiff1d(np.arange(n), named)
    assert (c.source[other] == SOURCE_NONE).all() and (c.source[by_sni] == SOURCE_SNI).all()
    assert (c.source[named[10_000:]] == SOURCE_DNS).all()


def test_feeding_and_joining_from_two_threads() -> None:
    w = WireNames()
    rng = np.random.default_rng(2)
    keys, _ = _many(5000, rng)
    kb = keys.tobytes()
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for i in range(5000):
                k = kb[i * 48 : (i + 1) * 48]
                w.add_answer(4, k[8:24], k[24:40], f"t{i}.test", None, 600)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=feed)
    t.start()
    while t.is_alive():
        w.join(keys)
    t.join()
    assert not errors
    c = w.join(keys)
    assert _names(w, c.dst_name) == [f"t{i}.test" for i in range(5000)]
