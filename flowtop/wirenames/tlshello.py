"""The server name (SNI, RFC 6066) of a TLS ClientHello, by a bounded hand
parse of the record header, the handshake header and the extensions: every
length is checked against the bytes there, and nothing is read past them.
A ClientHello may span records and segments: `server_name` says NEED_MORE
while the bytes given end before the extension would."""

from __future__ import annotations

from enum import Enum

from flowtop.wirenames.hostname import from_bytes

_HANDSHAKE = 22  # TLS record content type
_CLIENT_HELLO = 1  # handshake message type
_SNI = 0  # extension type server_name
_HOST_NAME = 0  # ServerName.name_type
# A ClientHello's bytes flowtop reassembles at most (two first segments are
# plenty: post-quantum key shares make a hello ~1.8 kB, still under that).
MAX_HELLO = 16384


class Hello(Enum):
    """What a ClientHello parse found besides a name."""

    NEED_MORE = "need_more"  # a ClientHello so far: its SNI lies further on
    NOT_TLS = "not_tls"  # not a TLS handshake record: another protocol
    NO_SNI = "no_sni"  # a whole ClientHello without a host name
    MALFORMED = "malformed"  # a TLS handshake with lengths that do not add up


def looks_like_tls(data: bytes) -> bool:
    """A TLS handshake record's first bytes (type 22, version 3.x)."""
    return len(data) >= 3 and data[0] == _HANDSHAKE and data[1] == 3


def _handshake(data: bytes) -> bytes | Hello:
    """The handshake bytes carried by the leading records of data (a
    ClientHello may be split over several records)."""
    out = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3:
            return Hello.MALFORMED if pos else Hello.NOT_TLS
        n = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if n == 0 or n > 16384 + 2048:
            return Hello.MALFORMED
        out += data[pos + 5 : pos + 5 + n]
        pos += 5 + n
        if len(out) >= 4 and len(out) >= 4 + int.from_bytes(out[1:4], "big"):
            break
    return bytes(out)


def server_name(data: bytes) -> str | Hello:
    """The cleaned host name of the ClientHello at the start of data, or why none."""
    if len(data) < 3:
        return Hello.NEED_MORE
    if not looks_like_tls(data):
        return Hello.NOT_TLS
    hs = _handshake(data[:MAX_HELLO])
    if isinstance(hs, Hello):
        return hs
    if len(hs) < 4:
        return Hello.NEED_MORE
    if hs[0] != _CLIENT_HELLO:
        return Hello.NOT_TLS
    body_len = int.from_bytes(hs[1:4], "big")
    body = hs[4 : 4 + body_len]
    complete = len(body) == body_len
    # version (2), random (32), session id, cipher suites, compression methods
    pos = 34
    for width in (1, 2, 1):
        if pos + width > len(body):
            return _short(complete)
        pos += width + int.from_bytes(body[pos : pos + width], "big")
    if pos + 2 > len(body):
        return _short(complete, none=pos == len(body))  # no extensions at all
    ext_end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    if complete and ext_end > len(body):
        return Hello.MALFORMED
    pos += 2
    while pos + 4 <= min(ext_end, len(body)):
        etype = int.from_bytes(body[pos : pos + 2], "big")
        elen = int.from_bytes(body[pos + 2 : pos + 4], "big")
        start, pos = pos + 4, pos + 4 + elen
        if etype != _SNI:
            continue
        if pos > len(body):
            return _short(complete)
        return _sni(body[start:pos])
    return _short(complete, none=True)


def _short(complete: bool, none: bool = False) -> Hello:
    if not complete:
        return Hello.NEED_MORE
    return Hello.NO_SNI if none else Hello.MALFORMED


def _sni(ext: bytes) -> str | Hello:
    """The host_name entry of a server_name extension's body."""
    if len(ext) < 2:
        return Hello.MALFORMED
    end = min(len(ext), 2 + int.from_bytes(ext[:2], "big"))
    pos = 2
    while pos + 3 <= end:
        kind = ext[pos]
        n = int.from_bytes(ext[pos + 1 : pos + 3], "big")
        name = ext[pos + 3 : pos + 3 + n]
        if len(name) != n:
            return Hello.MALFORMED
        if kind == _HOST_NAME:
            got = from_bytes(name)
            return got if got is not None else Hello.NO_SNI
        pos += 3 + n
    return Hello.NO_SNI
