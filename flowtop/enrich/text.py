"""Untrusted text from outside (DNS names, MMDB strings, label files) made safe to show.

`flowtop.sanitize.clean` drops control and format characters one by one, which
removes the ESC of `ESC [ 2 J` but leaves `[2J` on screen. `safe_text` first
removes whole terminal escape sequences (CSI, OSC, DCS/SOS/PM/APC strings and
two-character escapes, in their 7-bit ESC and 8-bit C1 forms; an unterminated
string sequence runs to the end, as a terminal would swallow it), then applies
`clean` (control characters, bidi overrides and other format characters,
unassigned code points, length cap) and drops line/paragraph separators.

Nothing here escapes Rich markup: the result is plain text, and the views
render it as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

import re

from flowtop.sanitize import clean

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
_SEPARATORS = str.maketrans("", "", "\u2028\u2029")


def safe_text(s: str, max_len: int = 253) -> str:
    """`s` without escape sequences, control/format characters, capped at max_len."""
    return clean(_ESCAPES.sub("", s).translate(_SEPARATORS), max_len).strip()


def safe_or_none(value: object, max_len: int = 253) -> str | None:
    """safe_text of a str, None for anything else or for an empty result."""
    if not isinstance(value, str):
        return None
    out = safe_text(value, max_len)
    return out or None
