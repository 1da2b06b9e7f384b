"""Untrusted strings (interface names, DNS names, MMDB fields) made safe to show.

Control characters (C0, DEL, C1), bidi overrides and other invisible format
characters are removed; what remains can go to a terminal or a JSON line.
Escaping Rich markup is the view's business (it renders these as Text).
"""

from __future__ import annotations

import unicodedata

_MAX = 253


def clean(s: str, max_len: int = _MAX) -> str:
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        # Cc: control (ESC, BEL, C1 CSI ...); Cf: format (RLO, ZWJ ...);
        # Cs/Co/Cn: surrogates, private use, unassigned.
        if cat[0] == "C":
            continue
        out.append(ch)
    text = "".join(out)
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text
