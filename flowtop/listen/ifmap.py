"""(exporter, domain, interface index) -> the synthetic ifindex a flow key carries.

The key's ifindex is 32 bits and names() maps it to a name, so each
exporter's interfaces get indexes of their own: 1, 2, ... in the order first
seen, at most `cap`. Past the cap, records go to OVERFLOW ("(other)") and are
counted (listen_ifindex_exhausted): never dropped, never merged silently.
"""

from __future__ import annotations

import numpy as np

from flowtop.sanitize import clean

OVERFLOW = 0xFFFF_FFFF
DEFAULT_CAP = 65536


def exporter_label(address: str, domain: int) -> str:
    """How the view names an (exporter, domain): its address, #domain unless 0."""
    return address if domain == 0 else f"{address}#{domain}"


class IfMap:
    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self.cap = cap
        self._index: dict[tuple[str, int, int], int] = {}
        self._names: dict[int, str] = {}
        # What each synthetic index stands for, by index - 1 (indexes are
        # handed out in order and never reused): the query side's exporter
        # table (query/exporters.py) reads it with entries().
        self._entries: list[tuple[str, int, int]] = []
        self.exhausted = 0

    def __len__(self) -> int:
        return len(self._index)

    def one(self, address: str, domain: int, ifindex: int, name: bytes | None = None) -> int:
        key = (address, domain, ifindex)
        got = self._index.get(key)
        if got is None:
            if len(self._index) >= self.cap:
                return OVERFLOW
            got = self._index[key] = len(self._index) + 1
            self._entries.append(key)
            self._names[got] = f"{exporter_label(address, domain)}/if{ifindex}"
        if name is not None:
            text = clean(name.decode("utf-8", "replace"))[:64]
            self._names[got] = f"{exporter_label(address, domain)}/{text or f'if{ifindex}'}"
        return got

    def many(
        self, address: str, domain: int, ifindex: np.ndarray, names: dict[int, bytes]
    ) -> np.ndarray:
        """Synthetic indexes of an exporter domain's interface column (counted past the cap)."""
        uniq, inverse = np.unique(ifindex, return_inverse=True)
        ids = np.array(
            [self.one(address, domain, int(i), names.get(int(i))) for i in uniq], dtype=np.uint32
        )
        out: np.ndarray = ids[inverse]
        self.exhausted += int(np.count_nonzero(out == OVERFLOW))
        return out

    def entries(self, start: int = 0) -> list[tuple[str, int, int]]:
        """(exporter address, domain, exporter's ifindex) of synthetic indexes
        start + 1, start + 2, ...: what was added since a reader's last call."""
        return self._entries[start:]

    def names(self) -> dict[int, str]:
        out = dict(self._names)
        if self.exhausted:
            out[OVERFLOW] = "(other)"
        return out
