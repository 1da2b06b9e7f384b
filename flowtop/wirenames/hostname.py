"""Names from the wire as flowtop shows them: untrusted text, cleaned once,
where it enters (before it is interned)."""

from __future__ import annotations

from flowtop.sanitize import clean

# A DNS name's longest text form (RFC 1035: 255 octets on the wire, 253 as
# text); a longer one is cut with a marked end (clean's "…").
NAME_MAX_LEN = 253


def shown_name(raw: str) -> str | None:
    """A host name as shown: lower case (names are case-insensitive), no
    final dot, escape sequences, control, bidi and format characters
    removed, at most NAME_MAX_LEN characters; None when nothing is left."""
    text = raw.strip().rstrip(".").lower()
    if not (text.isascii() and text.isprintable()) or len(text) > NAME_MAX_LEN:
        # Printable ASCII (every usual host name) is what clean() leaves as
        # it is; anything else goes through it.
        text = clean(text, NAME_MAX_LEN).strip()
    return text or None


def from_bytes(raw: bytes) -> str | None:
    """shown_name of wire bytes (SNI, Host): invalid UTF-8 is replaced."""
    return shown_name(raw.decode("utf-8", "replace"))
