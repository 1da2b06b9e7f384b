"""The server name of a QUIC connection, from the client's Initial packets.

A client's first flight is one or more Initial packets (RFC 9000 17.2.2)
whose CRYPTO frames carry its TLS ClientHello, encrypted with keys anyone
can derive from the Destination Connection ID of the client's first
Initial (RFC 9001 5.2; version 2, RFC 9369, with its own salt, labels and
packet type bits). This module removes the header protection, decrypts
and verifies the packet (AES-128-GCM: the tag checked, so that stray UDP
to port 443 never yields a name), walks the frames, puts the CRYPTO data
together by offset, and hands the ClientHello to tlshello.py (its SNI is
the name: source `sni`).

The whole Initial is needed: the kernel hands up the datagram up to the
capture length (FT_WIRE_CAP, 2048 by default, more than a path MTU), and an
Initial the capture cut is counted, not guessed at (decrypting a prefix in
AES-CTR without the tag would name garbage too).

Bounded: a ClientHello of at most MAX_CRYPTO bytes, at most `max_conns`
connections waiting for the rest of theirs (a hello spanning two Initials),
each for `timeout` seconds; every give-up is counted (QuicInitials.counts,
merged into the feeder's). The crypto library (`cryptography`) is imported
on the first Initial, not before (the export-only process never pays for
it); without it QUIC names are off and every Initial is counted in
quic_off.
"""

from __future__ import annotations

import importlib.util
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from flowtop.wirenames import tlshello

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF  # RFC 9369


@dataclass(frozen=True)
class _Version:
    """What a QUIC version changes in its Initial packets."""

    salt: bytes  # the HKDF-Extract salt of the initial secret
    label: bytes  # prefix of the key, iv and hp labels ("quic " or "quicv2 ")
    initial_type: int  # the long header's packet type bits of an Initial


_VERSIONS = {
    VERSION_1: _Version(bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"), b"quic ", 0),
    VERSION_2: _Version(bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"), b"quicv2 ", 1),
}
# The ClientHello's bytes put together at most (post-quantum key shares make
# a hello ~1.8 kB; two full Initials carry ~2.3 kB).
MAX_CRYPTO = 8192
MAX_CHUNKS = 64  # CRYPTO frames kept per connection (a hello comes in a few)
MAX_CID = 20  # RFC 9000 17.2: connection ids are at most 20 bytes in v1
_SAMPLE = 16  # header protection's sample (AES)
_TAG = 16  # AES-128-GCM

# QuicInitials.counts: the feeder adds them to its own (wirenames/feed.py).
COUNTERS = (
    "quic_initials",  # QUIC Initial events read
    "quic_names",  # SNI names learnt from QUIC ClientHellos
    "quic_malformed",  # not a readable Initial (lengths, tag, frames, the hello's lengths)
    "quic_unparsed",  # a hello not put together: cut by the capture, past MAX_CRYPTO, timed out
    "quic_dropped",  # connections waiting for their hello's rest dropped for room
    "quic_skipped",  # not a client Initial flowtop reads (another version, a v1 0-RTT packet)
    "quic_off",  # Initials not read: the crypto library is missing
)


class Status(Enum):
    """What one packet gave, besides a name."""

    NAMED = "named"
    WAITING = "waiting"  # the hello's rest is to come
    DONE = "done"  # a connection read already (a later Initial, the router's other hook)
    NO_SNI = "no_sni"
    SKIPPED = "skipped"
    MALFORMED = "malformed"
    UNPARSED = "unparsed"
    OFF = "off"


class Malformed(Exception):
    """An Initial whose bytes do not add up (caught in this module)."""


def crypto_available() -> bool:
    """Whether the crypto library QUIC names need is installed (doctor),
    without importing it."""
    return importlib.util.find_spec("cryptography") is not None


_crypto: Any = None  # the imported primitives (_load), or False when missing


def _load() -> Any:
    """cryptography's primitives, imported on first use; None when missing."""
    global _crypto
    if _crypto is None:
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives import hashes, hmac
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
        except ImportError:
            _crypto = False
        else:
            _crypto = (InvalidTag, hashes, hmac, Cipher, algorithms, modes, AESGCM, HKDFExpand)
    return _crypto or None


class Keys:
    """A client's Initial keys (RFC 9001 5.2) for one version and the
    Destination Connection ID of its first Initial."""

    def __init__(self, version: int, dcid: bytes) -> None:
        got = _load()
        assert got is not None, "Keys without the crypto library"
        invalid_tag, hashes, hmac, cipher, algorithms, modes, aesgcm, hkdf_expand = got
        v = _VERSIONS[version]
        h = hmac.HMAC(v.salt, hashes.SHA256())  # HKDF-Extract(salt, dcid)
        h.update(dcid)
        initial = h.finalize()

        def expand(secret: bytes, label: bytes, length: int) -> bytes:
            full = b"tls13 " + label
            info = struct.pack("!HB", length, len(full)) + full + b"\0"  # HkdfLabel, no context
            out: bytes = hkdf_expand(hashes.SHA256(), length, info).derive(secret)
            return out

        client = expand(initial, b"client in", 32)
        self.key = expand(client, v.label + b"key", 16)
        self.iv = expand(client, v.label + b"iv", 12)
        self.hp = expand(client, v.label + b"hp", 16)
        self._aead = aesgcm(self.key)
        self._ecb = cipher(algorithms.AES(self.hp), modes.ECB())
        self._invalid_tag = invalid_tag

    def mask(self, sample: bytes) -> bytes:
        """The header protection mask of a 16-byte sample (RFC 9001 5.4.3)."""
        enc = self._ecb.encryptor()
        out: bytes = enc.update(sample) + enc.finalize()
        return out[:5]

    def decrypt(self, pn: int, header: bytes, sealed: bytes) -> bytes | None:
        """The payload of packet number pn (header: the unprotected header,
        the associated data); None when the tag does not verify."""
        nonce = (int.from_bytes(self.iv, "big") ^ pn).to_bytes(12, "big")
        try:
            out: bytes = self._aead.decrypt(nonce, sealed, header)
        except self._invalid_tag:
            return None
        return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer at pos (RFC 9000 16) and the position after it."""
    if pos >= len(buf):
        raise Malformed("varint past the end")
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        raise Malformed("varint past the end")
    value = first & 0x3F
    for b in buf[pos + 1 : pos + n]:
        value = (value << 8) | b
    return value, pos + n


@dataclass
class Initial:
    """One long-header Initial packet, still protected."""

    version: int
    dcid: bytes
    start: int  # where the packet starts in its datagram
    pn_offset: int  # where its packet number starts (in the datagram)
    end: int  # past its last byte (its Length field's end)


def initials(datagram: bytes) -> tuple[list[Initial], bool]:
    """The Initial packets of a client's datagram (coalesced packets walked
    by their Length fields), and whether the walk stopped at a packet the
    capture cut. Raises Malformed when a packet's header does not add up;
    stops at a packet of another type or version, or at trailing bytes
    (zeros padding a datagram). With UDP GSO the kernel hands up the
    segments one after another: a later segment is walked too when the
    first one's packets fill it exactly."""
    out: list[Initial] = []
    pos = 0
    while pos < len(datagram) and datagram[pos] & 0x80:
        start = pos
        if pos + 6 > len(datagram):
            raise Malformed("long header cut")
        first = datagram[pos]
        version = int.from_bytes(datagram[pos + 1 : pos + 5], "big")
        v = _VERSIONS.get(version)
        if v is None or (first >> 4) & 3 != v.initial_type or not first & 0x40:
            break  # another version, another packet type (0-RTT), no fixed bit
        pos += 5
        cids = []
        for _ in range(2):
            n = datagram[pos] if pos < len(datagram) else 0xFF
            if n > MAX_CID or pos + 1 + n > len(datagram):
                raise Malformed("connection id length")
            cids.append(datagram[pos + 1 : pos + 1 + n])
            pos += 1 + n
        token_len, pos = _varint(datagram, pos)
        pos += token_len
        length, pos = _varint(datagram, pos)
        if length < 4 + _SAMPLE:  # the sample starts 4 bytes past the packet number's start
            raise Malformed("Initial too short for its sample")
        end = pos + length
        if end > len(datagram):
            return out, True  # cut by the capture (or lying)
        out.append(Initial(version, cids[0], start, pos, end))
        pos = end
    return out, False


def unprotect(datagram: bytes, ini: Initial, keys: Keys) -> tuple[int, bytes] | None:
    """Header protection removed and the packet decrypted: (its packet
    number, its plaintext frames); None when the tag does not verify."""
    sample_at = ini.pn_offset + 4
    mask = keys.mask(datagram[sample_at : sample_at + _SAMPLE])
    first = datagram[ini.start] ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    pn_end = ini.pn_offset + pn_len
    pn_bytes = bytes(
        b ^ m for b, m in zip(datagram[ini.pn_offset : pn_end], mask[1:], strict=False)
    )
    header = bytes([first]) + datagram[ini.start + 1 : ini.pn_offset] + pn_bytes
    # A client's Initial packet numbers start at 0 and stay small: the
    # truncated number is the whole one (RFC 9000 A.3 with nothing acked).
    pn = int.from_bytes(pn_bytes, "big")
    plain = keys.decrypt(pn, header, datagram[pn_end : ini.end])
    return None if plain is None else (pn, plain)


def crypto_frames(plain: bytes) -> list[tuple[int, bytes]]:
    """The CRYPTO frames' (offset, data) of an Initial's plaintext; raises
    Malformed on a frame an Initial cannot carry or one cut short."""
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(plain)
    while pos < n:
        ftype = plain[pos]
        pos += 1
        if ftype == 0x00:  # PADDING: a run of them (most of an Initial) skipped at once
            pos = n - len(plain[pos:].lstrip(b"\0"))
            continue
        if ftype == 0x01:  # PING
            continue
        if ftype in (0x02, 0x03):  # ACK (0x03: with ECN counts)
            _largest, pos = _varint(plain, pos)
            _delay, pos = _varint(plain, pos)
            ranges, pos = _varint(plain, pos)
            if ranges > n:
                raise Malformed("ACK ranges")
            for _ in range(1 + 2 * ranges + (3 if ftype == 0x03 else 0)):
                _v, pos = _varint(plain, pos)
        elif ftype == 0x06:  # CRYPTO
            offset, pos = _varint(plain, pos)
            length, pos = _varint(plain, pos)
            if pos + length > n:
                raise Malformed("CRYPTO frame cut")
            out.append((offset, plain[pos : pos + length]))
            pos += length
        elif ftype in (0x1C, 0x1D):  # CONNECTION_CLOSE: nothing more to read
            return out
        else:
            raise Malformed(f"frame type {ftype:#x} in an Initial")
    return out


@dataclass
class _Conn:
    """A connection whose ClientHello is not whole yet."""

    since: float
    keys: Keys
    chunks: dict[int, bytes] = field(default_factory=dict)  # CRYPTO offset -> data
    seen: set[int] = field(default_factory=set)  # packet numbers read


def _contiguous(chunks: dict[int, bytes]) -> bytes:
    """The CRYPTO stream's bytes from offset 0 up to its first gap (bounded)."""
    out = bytearray()
    for offset in sorted(chunks):
        data = chunks[offset]
        if offset > len(out):
            break
        out += data[len(out) - offset :]
        if len(out) >= MAX_CRYPTO:
            break
    return bytes(out[:MAX_CRYPTO])


class QuicInitials:
    """Client Initials -> server names, per connection (the client's 5-tuple
    key, wirenames/names.conn_key). One thread (the feeder's)."""

    def __init__(self, max_conns: int = 1024, timeout: float = 5.0, max_keys: int = 256) -> None:
        self.max_conns = max_conns
        self.timeout = timeout
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._pending: OrderedDict[bytes, _Conn] = OrderedDict()
        # Connections read (named, or given up on) -> when: their later
        # Initials (ACKs, the router's second hook) are not read again.
        self._done: OrderedDict[bytes, float] = OrderedDict()
        # (version, dcid) -> Keys: the router's two hooks see each packet.
        self._keys: OrderedDict[tuple[int, bytes], Keys] = OrderedDict()
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._pending)

    def _keys_for(self, version: int, dcid: bytes) -> Keys:
        k = (version, dcid)
        got = self._keys.get(k)
        if got is None:
            got = self._keys[k] = Keys(version, dcid)
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        return got

    def feed(self, conn: bytes, datagram: bytes, whole: bool, now: float) -> tuple[Status, str]:
        """One client datagram of connection conn (whole: not cut by the
        capture): what it gave, and the name when NAMED. Counts it."""
        c = self.counts
        c["quic_initials"] += 1
        status, name = self._feed(conn, datagram, whole, now)
        if status is Status.NAMED:
            c["quic_names"] += 1
        elif status is Status.MALFORMED:
            c["quic_malformed"] += 1
        elif status is Status.UNPARSED:
            c["quic_unparsed"] += 1
        elif status is Status.SKIPPED:
            c["quic_skipped"] += 1
        elif status is Status.OFF:
            c["quic_off"] += 1
        if status in (Status.NAMED, Status.NO_SNI, Status.MALFORMED, Status.UNPARSED):
            self._finish(conn, now)
        return status, name

    def _feed(self, conn: bytes, datagram: bytes, whole: bool, now: float) -> tuple[Status, str]:
        if conn in self._done:
            return Status.DONE, ""
        if _load() is None:
            return Status.OFF, ""
        try:
            packets, cut = initials(datagram)
        except Malformed:
            # a header running past the bytes there: the capture's cut, or broken
            return (Status.MALFORMED if whole else Status.UNPARSED), ""
        if not packets:
            return (Status.UNPARSED if cut else Status.SKIPPED), ""
        pending = self._pending.get(conn)
        for ini in packets:
            opened = self._open(conn, datagram, ini, pending, now)
            if opened is None:
                return Status.MALFORMED, ""
            pending, pn, plain = opened
            if pn in pending.seen:
                continue  # a copy (the router's other hook, a retransmit of the same number)
            pending.seen.add(pn)
            try:
                frames = crypto_frames(plain)
            except Malformed:
                return Status.MALFORMED, ""
            for offset, data in frames:
                if offset < MAX_CRYPTO and len(pending.chunks) < MAX_CHUNKS:
                    pending.chunks[offset] = data
        if pending is None:
            return Status.WAITING, ""
        return self._hello(pending, cut or not whole)

    def _open(
        self, conn: bytes, datagram: bytes, ini: Initial, pending: _Conn | None, now: float
    ) -> tuple[_Conn, int, bytes] | None:
        """ini decrypted with its connection's keys, or with those of its own
        DCID (a first Initial, or one after a Retry under its new connection
        id: the connection starts again); None when neither verifies."""
        if pending is not None:
            got = unprotect(datagram, ini, pending.keys)
            if got is not None:
                return pending, got[0], got[1]
        keys = self._keys_for(ini.version, ini.dcid)
        got = unprotect(datagram, ini, keys)
        if got is None:
            return None
        if pending is None or pending.keys is not keys:
            pending = self._start(conn, keys, now)
        return pending, got[0], got[1]

    def _start(self, conn: bytes, keys: Keys, now: float) -> _Conn:
        self._pending.pop(conn, None)
        if len(self._pending) >= self.max_conns:
            self.expire(now)
            if len(self._pending) >= self.max_conns:
                self._pending.popitem(last=False)  # the oldest
                self.counts["quic_dropped"] += 1
        p = self._pending[conn] = _Conn(now, keys)
        return p

    def _hello(self, pending: _Conn, cut: bool) -> tuple[Status, str]:
        data = _contiguous(pending.chunks)
        if not data:
            return (Status.UNPARSED if cut else Status.WAITING), ""
        # tlshello reads TLS records: the handshake bytes given a record header.
        record = b"\x16\x03\x01" + len(data).to_bytes(2, "big") + data
        got = tlshello.server_name(record)
        if isinstance(got, str):
            return Status.NAMED, got
        if got is tlshello.Hello.NEED_MORE:
            return (Status.UNPARSED if len(data) >= MAX_CRYPTO else Status.WAITING), ""
        if got is tlshello.Hello.NO_SNI:
            return Status.NO_SNI, ""
        return Status.MALFORMED, ""  # not a ClientHello, or its lengths do not add up

    def _finish(self, conn: bytes, now: float) -> None:
        self._pending.pop(conn, None)
        self._done[conn] = now
        self._done.move_to_end(conn)
        if len(self._done) > 4 * self.max_conns:
            self._done.popitem(last=False)

    def expire(self, now: float) -> None:
        """Connections waiting longer than timeout given up on (counted
        unparsed), and done ones forgotten."""
        limit = now - self.timeout
        while self._pending:
            conn, p = next(iter(self._pending.items()))
            if p.since >= limit:
                break
            del self._pending[conn]
            self.counts["quic_unparsed"] += 1
        while self._done:
            conn, t = next(iter(self._done.items()))
            if t >= limit:
                break
            del self._done[conn]
