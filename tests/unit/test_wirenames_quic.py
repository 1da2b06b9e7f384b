"""QUIC client Initials (wirenames/quic.py): RFC 9001 Appendix A's sample
client Initial as ground truth (keys, header protection, the CRYPTO frame,
the name in it), Initials sealed by aioquic (an implementation of its own)
around real ClientHellos from Python's ssl: a hello over two Initials, a
second Initial under the server's connection id, version 2; broken input
counted, never raised; hostile names cleaned; the bounds counted."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from aioquic.quic.crypto import CryptoPair

from flowtop.kernel.layout import FLOW_KEY
from flowtop.kernel.wire_records import KIND_QUIC, WirePacket, decode, encode
from flowtop.wirenames import quic, tlshello
from flowtop.wirenames.feed import Feeder
from flowtop.wirenames.names import SOURCE_SNI, WireNames
from flowtop.wirenames.quic import VERSION_1, VERSION_2, Keys, QuicInitials, Status
from tests.unit.wirenames_bytes import client_hello, flow_key

# RFC 9001 Appendix A.1: the client's chosen Destination Connection ID.
DCID = bytes.fromhex("8394c8f03e515708")
# A.1: the client's Initial key, IV and header protection key.
KEY, IV, HP = "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", (
    "9f50449e04a0e810283a1e9933adedd2")  # fmt: skip
# A.2: the unprotected header, the sample and the mask it gives.
HEADER = bytes.fromhex("c300000001088394c8f03e5157080000449e00000002")
SAMPLE, MASK = bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b"), bytes.fromhex("437b9aec36")
# A.2: the CRYPTO frame's data, a ClientHello for example.com (241 bytes).
CLIENT_HELLO = bytes.fromhex(
    "010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e86804fe3a47f06a2b69484c0000041301"
    "1302010000c000000010000e00000b6578616d706c652e636f6dff01000100000a00080006001d0017001800100007"
    "000504616c706e000500050100000000003300260024001d00209370b2c9caa47fbabaf4559fedba753de171fa71f50f1"
    "ce15d43e994ec74d748002b0003020304000d0010000e0403050306030203080408050806002d00020101001c000240"
    "01003900320408ffffffffffffffff05048000ffff07048000ffff0801100104800075300901100f088394c8f03e51"
    "570806048000ffff"
)
# A.2: the protected client Initial, a whole 1200-byte datagram.
PROTECTED = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9bd8bab936b47d92ec356c"
    "0bab7df5976d27cd449f63300099f3991c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df621230c83711b39343fa028cea7f7fb5ff89"
    "eac2308249a02252155e2347b63d58c5457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec4e15daf8500a6ef69ec4e3feb6b1d98e"
    "610ac8b7ec3faf6ad760b7bad1db4ba3485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c7b4378e846d29f37ed7b4ea9ec5d82e7"
    "961b7f25a9323851f681d582363aa5f89937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c7468449a13d8e3b95811a198f3491de3e7"
    "fe942b330407abf82a4ed7c1b311663ac69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632291d6a418211cc2962e20fe47feb3edf"
    "330f2c603a9d48c0fcb5699dbfe5896425c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ffef132eef2fa09346aee33c28eb130ff2"
    "8f5b766953334113211996d20011a198e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73203a4a13e96f5432ec0fd4a1ee65accd"
    "d5e3904df54c1da510b0ff20dcc0c77fcb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03adea2e1fbc5aa463d08ca19896d2bf59a07"
    "1b851e6c239052172f296bfb5e72404790a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f440591f355e12d439ff150aab7613499d"
    "bd49adabc8676eef023b15b65bfc5ca06948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0be79e2fb8f5d5fbbe2e30ecadd220723"
    "c8c0aea8078cdfcb3868263ff8f0940054da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9f96f3ca9ec1dde434da7d2d392b905dd"
    "f3d1f9af93d1af5950bd493f5aa731b4056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241e221af44860018ab0856972e194cd934"
)
C, S = "10.1.0.2", "203.0.113.10"
CONN = b"conn-1"
LOSSES = ("quic_malformed", "quic_unparsed", "quic_dropped", "quic_skipped", "quic_off")


def _v2(n: int) -> bytes:
    """A two-byte QUIC varint."""
    return (0x4000 | n).to_bytes(2, "big")


def crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + _v2(offset) + _v2(len(data)) + data


def seal(frames: bytes, key_dcid: bytes = DCID, pn: int = 0, version: int = VERSION_1,
         dcid: bytes | None = None, scid: bytes = b"\x01\x02\x03\x04",
         size: int = 1200) -> bytes:  # fmt: skip
    """A client Initial datagram carrying frames (PADDING up to size),
    protected by aioquic with the Initial keys of key_dcid."""
    pair = CryptoPair()
    pair.setup_initial(key_dcid, is_client=True, version=version)
    dcid = key_dcid if dcid is None else dcid
    ptype = 0 if version == VERSION_1 else 1
    first = 0xC0 | (ptype << 4) | 1  # two packet number bytes
    head = bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + b"\x00"  # no token
    fixed = 1 + 4 + len(head) + 2 + 2
    frames = frames.ljust(max(len(frames), size - fixed - 16), b"\x00")
    header = bytes([first]) + version.to_bytes(4, "big") + head + _v2(2 + len(frames) + 16)
    return pair.encrypt_packet(header + pn.to_bytes(2, "big"), frames, pn)


def handshake(name: str) -> bytes:
    """A real ClientHello's handshake message (Python's ssl), without its TLS record header."""
    record = client_hello(name)
    assert record[0] == 22 and len(record) == 5 + int.from_bytes(record[3:5], "big")
    return record[5:]


def hand_hello(sni: bytes, pad: int = 0) -> bytes:
    """A minimal ClientHello handshake message whose server_name is sni, any
    bytes and length (ssl refuses what a hostile client may send), after a
    padding extension of pad bytes when pad."""
    entry = b"\x00" + len(sni).to_bytes(2, "big") + sni
    ext = b"\x00\x00" + (len(entry) + 2).to_bytes(2, "big") + len(entry).to_bytes(2, "big") + entry
    versions = b"\x00\x2b\x00\x03\x02\x03\x04"
    exts = ext + versions
    if pad:
        exts = b"\x00\x15" + pad.to_bytes(2, "big") + bytes(pad) + exts
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(exts).to_bytes(2, "big") + exts
    return b"\x01" + len(body).to_bytes(3, "big") + body


def test_rfc9001_initial_keys_and_header_protection() -> None:
    k = Keys(VERSION_1, DCID)
    assert (k.key.hex(), k.iv.hex(), k.hp.hex()) == (KEY, IV, HP)
    assert k.mask(SAMPLE) == MASK
    got, cut = quic.initials(PROTECTED)
    assert not cut and len(got) == 1
    ini = got[0]
    assert (ini.version, ini.dcid, ini.start, ini.pn_offset, ini.end) == (VERSION_1, DCID, 0, 18,
                                                                          1200)  # fmt: skip
    assert PROTECTED[ini.pn_offset + 4 : ini.pn_offset + 20] == SAMPLE


def test_rfc9001_client_initial_decrypts_to_its_crypto_frame() -> None:
    ini = quic.initials(PROTECTED)[0][0]
    opened = quic.unprotect(PROTECTED, ini, Keys(VERSION_1, DCID))
    assert opened is not None
    pn, plain = opened
    assert pn == 2 and len(plain) == 1200 - len(HEADER) - 16
    # A.2's payload: the CRYPTO frame (offset 0, 241 bytes), then PADDING
    assert plain[:4] == bytes.fromhex("060040f1") and plain[4 + 241 :] == bytes(len(plain) - 245)
    assert quic.crypto_frames(plain) == [(0, CLIENT_HELLO)]
    # aioquic opens the same datagram to the same plaintext
    pair = CryptoPair()
    pair.setup_initial(DCID, is_client=False, version=VERSION_1)
    header, payload, number = pair.decrypt_packet(PROTECTED, 18, 0)
    assert (header, payload, number) == (HEADER, plain, 2)


def test_rfc9001_client_initial_names_example_com() -> None:
    q = QuicInitials()
    assert q.feed(CONN, PROTECTED, True, 1.0) == (Status.NAMED, "example.com")
    assert q.counts["quic_initials"] == 1 and q.counts["quic_names"] == 1
    assert all(q.counts[k] == 0 for k in LOSSES), q.counts
    # the same Initial again (the router's other hook): read already, nothing counted
    assert q.feed(CONN, PROTECTED, True, 1.1) == (Status.DONE, "")
    assert q.counts["quic_names"] == 1 and all(q.counts[k] == 0 for k in LOSSES)


def test_the_key_with_the_wrong_dcid_does_not_verify() -> None:
    ini = quic.initials(PROTECTED)[0][0]
    assert quic.unprotect(PROTECTED, ini, Keys(VERSION_1, bytes(8))) is None
    tampered = bytearray(PROTECTED)
    tampered[100] ^= 1
    q = QuicInitials()
    assert q.feed(CONN, bytes(tampered), True, 1.0) == (Status.MALFORMED, "")
    assert q.counts["quic_malformed"] == 1 and q.counts["quic_names"] == 0


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_a_real_hello_in_one_initial(version: int) -> None:
    hs = handshake("one.quic.example")
    q = QuicInitials()
    assert q.feed(CONN, seal(crypto(0, hs), version=version), True, 1.0) == (
        Status.NAMED, "one.quic.example")  # fmt: skip


@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_a_hello_over_two_initials(order: str) -> None:
    name = "two." + "long-label." * 8 + "quic.example"
    hs = handshake(name)
    cut = hs.index(name.encode()) + 10  # the name itself split
    first = seal(crypto(0, hs[:cut]), pn=0)
    second = seal(crypto(cut, hs[cut:]) + b"\x01", pn=1)  # and a PING
    packets = [first, second] if order == "in order" else [second, first]
    q = QuicInitials()
    assert q.feed(CONN, packets[0], True, 1.0) == (Status.WAITING, "")
    assert q.feed(CONN, packets[0], True, 1.0) == (Status.WAITING, "")  # a copy
    assert q.feed(CONN, packets[1], True, 1.1) == (Status.NAMED, name)
    assert q.counts["quic_names"] == 1 and all(q.counts[k] == 0 for k in LOSSES), q.counts
    assert len(q) == 0


def test_two_initials_in_one_gso_event() -> None:
    """A UDP GSO packet's segments come up one after the other in one event
    (the second cut by the capture here): both Initials are read."""
    name = "gso.quic.example"
    hs = handshake(name)
    cut = hs.index(name.encode()) + 4
    both = seal(crypto(0, hs[:cut]), pn=0) + seal(crypto(cut, hs[cut:]), pn=1)
    q = QuicInitials()
    assert q.feed(CONN, both, True, 1.0) == (Status.NAMED, name)
    q2 = QuicInitials()
    assert q2.feed(CONN, both[:2048], False, 1.0) == (Status.WAITING, "")  # the rest cut


def test_the_second_initial_under_the_servers_connection_id() -> None:
    """RFC 9000 7.2: after the server's first Initial the client sends to
    the server's connection id, its keys still the first DCID's."""
    hs = handshake("moved.quic.example")
    cut = hs.index(b"moved.quic") - 9  # before the server_name extension
    q = QuicInitials()
    assert q.feed(CONN, seal(crypto(0, hs[:cut])), True, 1.0)[0] is Status.WAITING
    later = seal(crypto(cut, hs[cut:]), pn=1, dcid=b"\xaa" * 8)
    assert q.feed(CONN, later, True, 1.1) == (Status.NAMED, "moved.quic.example")


def test_ack_frames_and_a_coalesced_0rtt_packet_are_walked() -> None:
    hs = handshake("ack.quic.example")
    ack = b"\x02" + b"\x00\x00\x01\x00" + b"\x00\x00"  # largest 0, delay 0, 1 range, first 0
    ack_ecn = b"\x03\x00\x00\x00\x00\x00\x00\x00"
    dgram = seal(ack + ack_ecn + crypto(0, hs), size=600)
    zero_rtt = bytes([0xD1]) + b"\x00\x00\x00\x01" + b"\x08" + DCID + b"\x00" + _v2(40) + bytes(40)
    assert QuicInitials().feed(CONN, dgram + zero_rtt, True, 1.0) == (
        Status.NAMED,
        "ack.quic.example",
    )


def test_broken_initials_are_counted_never_raised() -> None:
    rng = np.random.default_rng(16)
    cases: list[tuple[bytes, bool]] = []
    cases += [(PROTECTED[:n], False) for n in range(0, 1200, 7)]  # cut by the capture
    cases += [(PROTECTED[:n], True) for n in range(1, 1200, 13)]  # short datagrams
    cases += [(b"\xc0" + rng.bytes(int(n)), True) for n in rng.integers(0, 1400, 200)]
    cases += [(bytes([b]) + rng.bytes(1199), True) for b in range(0xC0, 0xE0)]
    hs = handshake("x.example")
    cases += [
        (b"", True),
        (seal(b"\x08" + bytes(20)), True),  # a STREAM frame: not in an Initial
        (seal(crypto(0, hs)[:-40], size=0), True),  # a CRYPTO frame cut (no padding after)
        (seal(b"\x02\x00\x00\x7f\xff"), True),  # an ACK with more ranges than bytes
        (seal(crypto(0, b"\x02\x00\x00\x04abcd")), True),  # a ServerHello type, not a hello
        (seal(crypto(0, hs[:4] + b"\xff" * 60)), True),  # a hello whose lengths do not add up
        (PROTECTED[:5] + b"\x15" + PROTECTED[6:], True),  # a connection id over 20 bytes
    ]
    seen = 0
    for i, (data, whole) in enumerate(cases):
        q = QuicInitials()
        status, name = q.feed(b"c%d" % i, data, whole, 1.0)
        q.expire(100.0)  # what waits is given up on
        assert name == "" and status is not Status.NAMED, (i, status)
        assert q.counts["quic_names"] == 0
        # each one is counted once: as a loss, or waiting until it expired
        assert sum(q.counts[k] for k in LOSSES) == 1, (i, status, q.counts)
        seen += 1
    assert seen == len(cases)
    # the ones flowtop can tell are not an Initial it reads are skipped, not malformed
    q = QuicInitials()
    other = bytes([0xC0]) + b"\xff\x00\x00\x1d" + PROTECTED[5:]  # another version
    zero_rtt = bytes([0xD0]) + PROTECTED[1:]  # a v1 0-RTT packet
    for i, d in enumerate((other, zero_rtt)):
        assert q.feed(b"s%d" % i, d, True, 1.0) == (Status.SKIPPED, "")
    assert q.counts["quic_skipped"] == 2 and q.counts["quic_malformed"] == 0


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"evil\x1b[31m.example\x1b]52;c;QUJD\x07", "evil.example"),
        (b"a" * 300, "a" * 252 + "\u2026"),
        (b"bidi\xe2\x80\xaeelpmaxe.test", "bidielpmaxe.test"),
    ],
)
def test_hostile_names_are_cleaned(raw: bytes, want: str) -> None:
    hs = hand_hello(raw)
    record = b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs
    # The same name as the TCP path's parser gives for the same hello
    assert tlshello.server_name(record) == want
    cut = hs.index(raw) + 3
    dgram = seal(crypto(0, hs[:cut]), pn=0)
    rest = seal(crypto(cut, hs[cut:]), pn=1)
    q = QuicInitials()
    assert q.feed(CONN, dgram, True, 1.0)[0] is Status.WAITING
    status, name = q.feed(CONN, rest, True, 1.0)
    assert (status, name) == (Status.NAMED, want)
    assert name.isprintable() and "\x1b" not in name and "\u202e" not in name


def test_waiting_connections_are_bounded_and_expire_counted() -> None:
    hs = handshake("wait.quic.example")
    half = seal(crypto(0, hs[:60]))  # before the extensions
    q = QuicInitials(max_conns=2, timeout=5.0)
    for i in range(3):
        assert q.feed(b"w%d" % i, half, True, 1.0 + i)[0] is Status.WAITING
    assert len(q) == 2 and q.counts["quic_dropped"] == 1
    q.expire(7.5)  # w1 waited past the timeout (since 2.0), w2 not (since 3.0)
    assert len(q) == 1 and q.counts["quic_unparsed"] == 1
    # a hello that never ends within MAX_CRYPTO bytes is given up on, counted
    big = hand_hello(b"far.quic.example", pad=quic.MAX_CRYPTO)  # the name past the bound
    q2 = QuicInitials()
    got = []
    for pn, off in enumerate(range(0, len(big), 1100)):
        got.append(q2.feed(CONN, seal(crypto(off, big[off : off + 1100]), pn=pn), True, 1.0)[0])
        if got[-1] is not Status.WAITING:
            break
    assert got[-1] is Status.UNPARSED and q2.counts["quic_unparsed"] == 1, got
    assert len(got) == quic.MAX_CRYPTO // 1100 + 1  # given up on once MAX_CRYPTO bytes were in


def test_feeder_names_the_clients_udp_flow() -> None:
    w = WireNames()
    f = Feeder(w)
    key = flow_key(C, S, 51000, 443, proto=17)
    pkt = WirePacket(key, KIND_QUIC, 0, PROTECTED, len(PROTECTED))
    assert decode(encode(pkt)) == pkt
    f.feed([pkt])
    back = flow_key(S, C, 443, 51000, proto=17, direction=1)
    other = flow_key(C, S, 51001, 443, proto=17)
    c = w.join(np.frombuffer(key + back + other, dtype=FLOW_KEY))
    assert [w.names.get(int(d)) if d else None for d in c.dst_name] == ["example.com", None, None]
    assert [w.names.get(int(s)) if s else None for s in c.src_name] == [None, "example.com", None]
    assert list(c.source) == [SOURCE_SNI, SOURCE_SNI, 0]
    counters = w.counters()
    assert counters["quic_initials"] == 1 and counters["quic_names"] == 1
    # a cut Initial through the feeder is counted unparsed
    f.feed([WirePacket(other, KIND_QUIC, 0, PROTECTED[:1000], len(PROTECTED))])
    assert w.counters()["quic_unparsed"] == 1


_NO_CRYPTO = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
from flowtop.wirenames import quic
from flowtop.wirenames.quic import QuicInitials
data = bytes.fromhex(sys.argv[1])
q = QuicInitials()
print(q.feed(b"c", data, True, 1.0)[0].name, q.counts["quic_off"], q.counts["quic_names"])
"""


def test_cryptography_is_imported_on_the_first_initial_only() -> None:
    code = ("import sys, flowtop.wirenames.feed, flowtop.wirenames.reader;"
            "print('cryptography' in sys.modules)")  # fmt: skip
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    assert got.stdout.strip() == "False", got


def test_without_cryptography_quic_is_off_and_counted() -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    got = subprocess.run([sys.executable, "-c", _NO_CRYPTO, PROTECTED.hex()], capture_output=True,
                         text=True, check=False, env=env)  # fmt: skip
    assert got.returncode == 0 and got.stdout.split() == ["OFF", "1", "0"], got


def test_quic_losses_reach_the_collector_health() -> None:
    """What the feeder counts for QUIC is in the engine's names_* counters
    (dump's stats line, the header): a garbage Initial malformed, a cut one
    unparsed, a connection dropped for room."""
    from types import SimpleNamespace

    from flowtop.core.engine import Engine

    w = WireNames()
    f = Feeder(w)
    f.quic.max_conns = 1
    hs = handshake("health.quic.example")
    waiting = seal(crypto(0, hs[:60]))
    junk = b"\xc3\x00\x00\x00\x01\x08" + bytes(1194)  # v1, then a Length of 0
    f.feed([
        WirePacket(flow_key(C, S, 1, 443, proto=17), KIND_QUIC, 0, junk, len(junk)),
        WirePacket(flow_key(C, S, 2, 443, proto=17), KIND_QUIC, 0, PROTECTED[:900], 1200),
        WirePacket(flow_key(C, S, 3, 443, proto=17), KIND_QUIC, 0, waiting, len(waiting)),
        WirePacket(flow_key(C, S, 4, 443, proto=17), KIND_QUIC, 0, waiting, len(waiting)),
    ])  # fmt: skip
    got = Engine._names_health(SimpleNamespace(names=w))  # type: ignore[arg-type]
    assert (got["malformed"], got["unparsed"], got["dropped"]) == (1, 1, 1), got
