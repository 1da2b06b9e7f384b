"""Untrusted strings (interface names, DNS names, MMDB fields) made safe to show.

Whole terminal escape sequences go first (CSI, OSC, DCS/SOS/PM/APC strings
and two-character escapes, in their 7-bit ESC and 8-bit C1 forms; an
unterminated string runs to the end, as a terminal would swallow it): dropping
only the ESC of `ESC [ 2 J` would leave `[2J` on screen, and an OSC 52
clipboard payload in plain sight. Then control characters (C0, DEL, C1), bidi
overrides and other invisible format characters, unassigned code points and
line/paragraph separators are removed. What remains can go to a terminal or
a JSON line. Escaping Rich markup is the view's business (it renders these
as Text, never as markup).
"""

from __future__ import annotations

import re
import unicodedata

_MAX = 253
# Order matters: string sequences (which may contain ESC \ as terminator) first.
_ESCAPES = re.compile(
    r"""
      (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])   # OSC, DCS, SOS, PM, APC: a string ...
      .*?(?:\x07|\x1b\\|\x9c|$)                  # ... up to BEL or ST, else to the end
    | (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?          # CSI: parameters, intermediates, final
    | \x1b[ -/]*[0-~]?                           # other escapes (nF, Fp, Fe, Fs)
    """,
    re.VERBOSE | re.DOTALL,
)


def clean(s: str, max_len: int = _MAX) -> str:
    if "\x1b" in s or any("\x80" <= ch <= "\x9f" for ch in s):
        s = _ESCAPES.sub("", s)
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        # Cc: control (ESC, BEL, C1 CSI ...); Cf: format (RLO, ZWJ ...);
        # Cs/Co/Cn: surrogates, private use, unassigned; Zl/Zp: line and
        # paragraph separators.
        if cat[0] == "C" or cat in ("Zl", "Zp"):
            continue
        out.append(ch)
    text = "".join(out)
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text
