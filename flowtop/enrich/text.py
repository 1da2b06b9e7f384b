"""Untrusted text from outside (DNS names, MMDB strings, label files) made safe to show.

`safe_text` is `flowtop.sanitize.clean` (whole escape sequences, control,
bidi and format characters removed; a length cap) without surrounding blanks.
Nothing here escapes Rich markup: the result is plain text, and the views
render it as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

from flowtop.sanitize import clean


def safe_text(s: str, max_len: int = 253) -> str:
    """`s` without escape sequences, control/format characters, capped at max_len."""
    return clean(s, max_len).strip()


def safe_or_none(value: object, max_len: int = 253) -> str | None:
    """safe_text of a str, None for anything else or for an empty result."""
    if not isinstance(value, str):
        return None
    out = safe_text(value, max_len)
    return out or None
