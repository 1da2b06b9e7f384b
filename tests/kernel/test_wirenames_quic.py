"""Names from the wire over QUIC: real QUIC handshakes (aioquic's client
against aioquic's server, a self-signed certificate made at test time)
through a router running `flowtop dump --json`: the client's UDP flow to
port 443 is named by the SNI of the ClientHello in its Initial packets, on
the router and on the client; a ClientHello spanning two Initials (600
cipher suites in front of its extensions: the server name is only in the
second Initial, as aioquic's own decryption of the datagrams the client
sent shows) is named too.

client (vc) <-> (vr1) router (vr2) <-> (vs) server
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import pull_quic_header
from aioquic.tls import CipherSuite
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import netns
from .dump import Collector
from .netns import Pair, Router

pytestmark = pytest.mark.kernel

C4, S4 = "10.200.2.1", "10.200.3.2"
C6, S6 = "fd00:200:2::1", "fd00:200:3::2"
ALPN = ["flowtop-test"]


def make_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made now (no key in the repo)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quic.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    c, k = d / "cert.pem", d / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    k.chmod(0o600)
    return c, k


class QuicServer:
    """aioquic's server on S4:443 and S6:443 in the server namespace, on an
    event loop of its own thread."""

    def __init__(self, ns: str, cert: Path, key: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._servers: list[Any] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(ns, cert, key), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the QUIC server did not start"
        if self._error is not None:
            raise self._error

    def _run(self, ns: str, cert: Path, key: Path) -> None:
        conf = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
        conf.load_cert_chain(str(cert), str(key))
        try:
            with netns.entered(ns):  # the sockets are made in the namespace
                for host in (S4, S6):
                    srv = self.loop.run_until_complete(serve(host, 443, configuration=conf))
                    self._servers.append(srv)
        except BaseException as exc:  # raised in the test's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        for srv in self._servers:
            srv.close()
        self.loop.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class Recorder(QuicConnectionProtocol):
    """A client protocol that keeps every datagram it sends."""

    sent: list[bytes]

    def connection_made(self, transport: Any) -> None:
        self.sent = []
        send = transport.sendto

        def sendto(data: bytes, addr: Any = None) -> None:
            self.sent.append(bytes(data))
            send(data, addr)

        transport.sendto = sendto
        super().connection_made(transport)


def quic_connect(host: str, name: str, sport: int, suites: int = 0) -> list[bytes]:
    """A whole QUIC handshake and a PING from sport to host:443, SNI name;
    suites > 0: that many cipher suites offered (a ClientHello over two
    Initials). The datagrams the client sent."""
    conf = QuicConfiguration(
        is_client=True, alpn_protocols=ALPN, server_name=name, verify_mode=ssl.CERT_NONE
    )
    if suites:
        conf.cipher_suites = [CipherSuite.AES_128_GCM_SHA256] * suites

    async def run() -> list[bytes]:
        async with connect(
            host, 443, configuration=conf, create_protocol=Recorder, local_port=sport
        ) as client:
            await asyncio.wait_for(client.ping(), 5)
            assert isinstance(client, Recorder)
            return client.sent

    return asyncio.run(asyncio.wait_for(run(), 15))


def initial_plaintext(datagram: bytes, dcid: bytes) -> bytes:
    """aioquic's decryption of a client Initial (keys of the first DCID)."""
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    pair = CryptoPair()
    pair.setup_initial(dcid, is_client=False, version=header.version or 1)
    _h, plain, _pn = pair.decrypt_packet(datagram[: header.packet_length], buf.tell(), 0)
    return plain


def first_dcid(datagram: bytes) -> bytes:
    return pull_quic_header(Buffer(data=datagram), host_cid_length=8).destination_cid


@pytest.fixture
def quic_server(router: Router, tmp_path: Path) -> Iterator[QuicServer]:
    cert, key = make_cert(tmp_path)
    srv = QuicServer(router.server.name, cert, key)
    try:
        yield srv
    finally:
        srv.close()


def named(res: Any, **match: Any) -> dict[str, Any]:
    f = res.flow(proto=17, **match)
    assert f is not None, (match, [x for x in res.flows if x.get("proto") == 17])
    return f


def test_quic_initials_name_the_clients_udp_flow(router: Router, quic_server: QuicServer) -> None:
    col = Collector(router.router, ["vr1", "vr2"]).start()
    on_client = Collector(router.client, ["vc"]).start()
    try:
        col.wait_ready()
        on_client.wait_ready()
        with netns.entered(router.client.name):
            one = quic_connect(S4, "quic.shop.example", 44000)
            big = quic_connect(S4, "big.quic.example", 44001, suites=600)
            six = quic_connect(S6, "v6.quic.example", 44002)
        time.sleep(2.5)  # two intervals: the names are joined to the flows' rows
    finally:
        res = col.stop()
        mine = on_client.stop()

    # ground truth of the big hello: its name is not in the first Initial, it is in the second
    dcid = first_dcid(big[0])
    assert b"big.quic.example" not in initial_plaintext(big[0], dcid)
    assert b"big.quic.example" in initial_plaintext(big[1], dcid)
    assert len(big[0]) >= 1200 and len(big[1]) >= 1200
    assert b"quic.shop.example" in initial_plaintext(one[0], first_dcid(one[0]))
    assert b"v6.quic.example" in initial_plaintext(six[0], first_dcid(six[0]))

    for name, sport, src, dst in (
        ("quic.shop.example", 44000, C4, S4),
        ("big.quic.example", 44001, C4, S4),
        ("v6.quic.example", 44002, C6, S6),
    ):
        for iface, direction in (("vr1", "ingress"), ("vr2", "egress")):
            f = named(res, iface=iface, direction=direction, src=src, dst=dst, sport=sport,
                      dport=443)  # fmt: skip
            assert (f["dst_name"], f["name_source"]) == (name, "sni"), f
        back = named(res, iface="vr1", direction="egress", src=dst, dst=src, sport=443,
                     dport=sport)  # fmt: skip
        assert (back["src_name"], back["name_source"]) == (name, "sni"), back
        f = named(mine, iface="vc", direction="egress", src=src, dst=dst, sport=sport, dport=443)
        assert (f["dst_name"], f["name_source"]) == (name, "sni"), f
    for st in (res.stats, mine.stats):
        assert st["names_malformed"] == 0 and st["names_unparsed"] == 0, st
        assert st["names_dropped"] == 0, st


def test_only_initials_to_443_go_up(quiet_pair: Pair) -> None:
    """The kernel's test: UDP to 443 with a short header, and long-header
    Initial bytes to another port, hand nothing up; Initial-looking bytes to
    443 do (one event each) and, not decrypting, are counted malformed."""
    p = quiet_pair
    short = bytes([0x40]) + b"\x11" * 60  # a 1-RTT packet's first byte
    initial = bytes([0xC3]) + b"\x00\x00\x00\x01\x08" + b"\x22" * 1194  # v1 Initial, junk inside
    with netns.entered(p.a.name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.200.1.1", 45000))
    col = Collector(p.a, ["va"]).start()
    try:
        col.wait_ready()
        for _ in range(7):
            s.sendto(short, ("10.200.1.2", 443))
            s.sendto(initial, ("10.200.1.2", 9443))
        for _ in range(3):
            s.sendto(initial, ("10.200.1.2", 443))
        time.sleep(2.5)
    finally:
        res = col.stop()
        s.close()
    to443 = res.flow(iface="va", direction="egress", proto=17, sport=45000, dport=443)
    other = res.flow(iface="va", direction="egress", proto=17, sport=45000, dport=9443)
    assert to443 is not None and to443["packets"] == 10, to443
    assert other is not None and other["packets"] == 7, other
    st = res.stats
    assert st["wire_events"] == 3 and st["wire_rate_limited"] == 0, st
    assert st["names_malformed"] == 1, st  # the first read; the connection's later ones skipped
    assert to443["dst_name"] is None, to443
