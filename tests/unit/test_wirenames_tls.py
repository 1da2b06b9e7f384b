"""SNI from real ClientHellos (Python's ssl through MemoryBIO) and Host from
HTTP request heads: exact names, cut and hostile inputs."""

from __future__ import annotations

import contextlib
import random

from flowtop.wirenames.httphost import Request, host
from flowtop.wirenames.tlshello import Hello, server_name
from tests.unit.wirenames_bytes import client_hello, hostile_hello, http_request


def test_sni_of_a_real_client_hello() -> None:
    for name in ("www.example.org", "API.Example.COM", "a.b.c.d.e.test", "xn--bcher-kva.example"):
        assert server_name(client_hello(name)) == name.lower()


def test_every_prefix_of_a_hello_needs_more_until_the_name_is_there() -> None:
    hello = client_hello("split.example.net")
    at = hello.index(b"split.example.net") + len("split.example.net")
    for n in range(at):
        assert server_name(hello[:n]) is Hello.NEED_MORE, n
    for n in range(at, len(hello) + 1):
        assert server_name(hello[:n]) == "split.example.net", n


def test_not_tls_and_malformed() -> None:
    assert server_name(b"SSH-2.0-OpenSSH_9.2\r\n") is Hello.NOT_TLS
    assert server_name(http_request("h.test")) is Hello.NOT_TLS
    hello = bytearray(client_hello("m.example"))
    hello[3:5] = (3).to_bytes(2, "big")  # a record of 3 bytes: the handshake runs past it
    assert server_name(bytes(hello)) in (Hello.MALFORMED, Hello.NEED_MORE)
    rng = random.Random(3)
    base = client_hello("fuzz.example")
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        got = server_name(bytes(b[: rng.randrange(len(b) + 1)]))
        assert isinstance(got, (str, Hello))


def test_hello_without_sni() -> None:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)  # no server_hostname: no SNI extension
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    assert server_name(out.read()) is Hello.NO_SNI


def test_hostile_sni_is_cleaned() -> None:
    raw = b"\x1b[31mevil\x1b]52;c;QUJD\x07" + "\u202emoc.x".encode() + b"b" * 200 + b"\x1b[2J"
    got = server_name(hostile_hello(raw))
    assert got == "evilmoc.x" + "b" * 200
    assert not any(ch in got for ch in "\x1b\x07\u202e")
    long = b"q" * 255
    got = server_name(hostile_hello(long))
    assert isinstance(got, str) and len(got) == 253 and got.endswith("…")  # a marked cut


def test_http_host() -> None:
    assert host(http_request("www.example.com")) == "www.example.com"
    assert host(http_request("Example.COM:8080")) == "example.com"
    assert host(http_request("[2001:db8::1]:8080")) == "2001:db8::1"
    assert host(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nhOsT:  h2.test \r\n\r\n") == "h2.test"
    assert host(b"GET / HTTP/1.0\r\n\r\n") is Request.NO_HOST
    assert host(b"\x16\x03\x01") is Request.NOT_HTTP
    req = http_request("cut.example.org")
    at = req.index(b"\r\n", req.index(b"Host:"))
    for n in range(4, at):
        assert host(req[:n]) is Request.NEED_MORE, n
    assert host(req[: at + 2]) == "cut.example.org"


def test_hostile_host_is_cleaned_and_capped() -> None:
    evil = "\x1b[2J\x1b]8;;http://x\x07link\u202e\u2066" + "h" * 300
    got = host(b"GET / HTTP/1.1\r\nHost: " + evil.encode() + b"\r\n\r\n")
    assert isinstance(got, str) and got.startswith("link") and len(got) == 253
    assert got.endswith("…") and not any(ord(c) < 32 or c in "\u202e\u2066" for c in got)
