"""MaxMind DB (MMDB) lookups: ASN and City/Country databases, vectorised.

A database is opened from a private in-memory snapshot (a memfd copy of the
file): the file on disk may then be replaced, rewritten in place or truncated
without the process seeing it change under its feet (an mmap of a file that
shrinks kills the reader with SIGBUS). The copy is compared with `fstat` after
reading; a file that changed while being read (half-written) is rejected.

Lookups walk the search tree for a whole batch of addresses at once with numpy
(one vectorised step per address bit), which yields each address's data-record
pointer. Records are decoded by the libmaxminddb C extension once per distinct
pointer (a City record takes ~40 us to decode, a tree walk step for 50k
addresses a fraction of a millisecond), and the fields flowtop uses are
extracted, validated and cleaned (`safe_text`) there. The extension's own
lookup of a representative address cross-checks the walk (same prefix length).

Anything wrong with a database (not found, unreadable, not an MMDB, wrong
type, corrupt tree or data found at open or at any later lookup) raises
`MmdbError` with a one-line reason; the caller disables that database.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowtop.enrich.files import open_regular
from flowtop.enrich.text import safe_or_none, safe_text

KIND_ASN = "asn"
KIND_CITY = "city"
KINDS = (KIND_ASN, KIND_CITY)

DEFAULT_DIRS = ("/usr/share/GeoIP", "/var/lib/GeoIP")
# File names looked for in DEFAULT_DIRS, best first.
DEFAULT_NAMES = {
    KIND_ASN: ("GeoLite2-ASN.mmdb", "GeoIP2-ISP.mmdb", "dbip-asn-lite.mmdb"),
    KIND_CITY: (
        "GeoIP2-City.mmdb",
        "GeoLite2-City.mmdb",
        "GeoIP2-Enterprise.mmdb",
        "dbip-city-lite.mmdb",
        "GeoIP2-Country.mmdb",
        "GeoLite2-Country.mmdb",
        "dbip-country-lite.mmdb",
    ),
}
# database_type must contain one of these (case-insensitive).
_TYPE_WORDS = {KIND_ASN: ("asn", "isp"), KIND_CITY: ("city", "country", "enterprise")}
_KIND_TEXT = {KIND_ASN: "an ASN/ISP", KIND_CITY: "a City/Country"}

MAX_SIZE = 4 << 30  # larger than any real GeoIP database
# Addresses looked up at open to catch a broken tree or data early.
PROBES = (
    "0.0.0.0",
    "1.1.1.1",
    "8.8.8.8",
    "9.9.9.9",
    "208.67.222.222",
    "255.255.255.255",
    "::1",
    "2001:db8::1",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)
ORG_MAX = 96
CITY_MAX = 64
_MAX_U32 = (1 << 32) - 1


class MmdbError(Exception):
    """A database that cannot be used; str() is a one-line reason."""


@dataclass(frozen=True, slots=True)
class FileSig:
    """What identifies one version of a file on disk (replaced or rewritten)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSig:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_sig(path: str) -> FileSig | None:
    try:
        return FileSig.of(os.stat(path))
    except OSError:
        return None


def find_default(kind: str, dirs: Sequence[str] = DEFAULT_DIRS) -> str | None:
    """The first existing well-known database file of `kind` in `dirs`."""
    for d in dirs:
        for name in DEFAULT_NAMES[kind]:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    return None


def one_line(e: BaseException, max_len: int = 160) -> str:
    text = safe_text(" ".join(str(e).split()), max_len)
    return text or type(e).__name__


def _os_reason(e: OSError) -> str:
    return e.strerror or one_line(e)


# --------------------------------------------------------------------------- #
# record extraction: only validated, cleaned fields leave this module
# --------------------------------------------------------------------------- #


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def extract_asn(rec: Any) -> tuple[int | None, str | None]:
    """(ASN, organisation) of a GeoLite2-ASN / GeoIP2-ISP record."""
    asn = _get(rec, "autonomous_system_number")
    if isinstance(asn, bool) or not isinstance(asn, int) or not 0 < asn <= _MAX_U32:
        asn = None
    org = safe_or_none(_get(rec, "autonomous_system_organization"), ORG_MAX)
    return asn, org


def extract_city(rec: Any) -> tuple[str | None, str | None]:
    """(ISO country code, English city name) of a City/Country record."""
    cc = _get(rec, "country", "iso_code")
    if not (isinstance(cc, str) and len(cc) == 2 and cc.isascii() and cc.isalpha()):
        cc = None
    else:
        cc = cc.upper()
    city = safe_or_none(_get(rec, "city", "names", "en"), CITY_MAX)
    return cc, city


_EXTRACT = {KIND_ASN: extract_asn, KIND_CITY: extract_city}


# --------------------------------------------------------------------------- #
# the database
# --------------------------------------------------------------------------- #


def _snapshot(path: str) -> tuple[int, FileSig]:
    """A memfd holding a consistent copy of `path`, and the file's signature."""
    try:
        src = open_regular(path)
    except OSError as e:
        raise MmdbError(_os_reason(e)) from None
    try:
        try:
            st0 = os.fstat(src)
            if st0.st_size == 0:
                raise MmdbError("empty file")
            if st0.st_size > MAX_SIZE:
                raise MmdbError(f"too large ({st0.st_size} bytes)")
            fd = os.memfd_create("flowtop-mmdb", os.MFD_CLOEXEC)
        except OSError as e:
            raise MmdbError(_os_reason(e)) from None
        try:
            copied = 0
            while copied < st0.st_size + 1:  # +1: notice a file that grew
                n = os.sendfile(fd, src, copied, st0.st_size + 1 - copied)
                if n == 0:
                    break
                copied += n
            st1 = os.fstat(src)
            if copied != st0.st_size or FileSig.of(st1) != FileSig.of(st0):
                raise MmdbError("file changed while being read (still being written?)")
        except OSError as e:
            os.close(fd)
            raise MmdbError(_os_reason(e)) from None
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(src)
    return fd, FileSig.of(st0)


@dataclass(frozen=True, slots=True)
class Description:
    path: str
    database_type: str
    build: str  # date the database was built, YYYY-MM-DD (or "?")


class MmdbDatabase:
    """One opened database of one kind. Not thread-safe: one caller (the engine)."""

    def __init__(self, path: str, kind: str, check_type: bool = True) -> None:
        """check_type=False accepts any database type (tests feed hostile
        databases through the lookup path with it)."""
        if kind not in KINDS:
            raise ValueError(kind)
        self.path = path
        self.kind = kind
        self._check_type = check_type
        # Here, not at the top: a run without a database (most) never
        # imports it (a tenth of a second of start-up).
        import maxminddb

        fd, self.sig = _snapshot(path)
        try:
            self._map = mmap.mmap(fd, self.sig.size, prot=mmap.PROT_READ)
            try:
                self._reader = maxminddb.open_database(
                    f"/proc/self/fd/{fd}", maxminddb.MODE_MMAP_EXT
                )
            except Exception as e:
                self._map.close()
                why = one_line(e).replace(f"/proc/self/fd/{fd}", "snapshot")
                raise MmdbError(f"not a valid MaxMind DB file ({why})") from None
        except OSError as e:
            raise MmdbError(_os_reason(e)) from None
        finally:
            os.close(fd)  # both mappings keep the memory alive
        try:
            self._check_metadata()
            self._tree = self._tree_view()
            self._v4_start = self._ipv4_start()
            self._extract = _EXTRACT[kind]
            # record value (tree record) -> result id; results[0] = nothing known
            self.results: list[tuple[Any, ...]] = [(None, None)]
            self._result_ids: dict[tuple[Any, ...], int] = {(None, None): 0}
            self._by_record: dict[int, int] = {}
            self._trial()
        except BaseException:
            self.close()
            raise

    # -- open-time checks --------------------------------------------------
    def _check_metadata(self) -> None:
        try:
            md = self._reader.metadata()
            dbtype, nodes, rsize = md.database_type, md.node_count, md.record_size
            ipv, epoch = md.ip_version, md.build_epoch
        except Exception as e:
            raise MmdbError(f"unreadable metadata ({one_line(e)})") from None
        if not isinstance(dbtype, str) or not all(
            isinstance(v, int) for v in (nodes, rsize, ipv, epoch)
        ):
            raise MmdbError("malformed metadata")
        self.database_type = safe_text(dbtype, 64)
        low = dbtype.lower()
        if self._check_type and not any(w in low for w in _TYPE_WORDS[self.kind]):
            raise MmdbError(
                f"database type {self.database_type!r} is not {_KIND_TEXT[self.kind]} database"
            )
        if rsize not in (24, 28, 32):
            raise MmdbError(f"unsupported record size {rsize}")
        if ipv not in (4, 6):
            raise MmdbError(f"unsupported IP version {ipv}")
        self.node_count = nodes
        self.record_size = rsize
        self.ip_version = ipv
        self._node_bytes = rsize // 4
        self._tree_size = nodes * self._node_bytes
        if nodes <= 0 or self._tree_size + 16 > self.sig.size:
            raise MmdbError(f"search tree ({nodes} nodes) larger than the file")
        # data section: from tree + 16 up to the metadata marker
        marker = self._map.rfind(b"\xab\xcd\xefMaxMind.com")
        self._data_size = max(0, marker - (self._tree_size + 16))
        try:
            built = datetime.datetime.fromtimestamp(epoch, datetime.UTC).date().isoformat()
        except (OverflowError, OSError, ValueError):
            built = "?"
        self.build = built

    def _ipv4_start(self) -> int:
        """Node (or record) reached by 96 zero bits: where IPv4 addresses start
        in an IPv6 tree."""
        if self.ip_version == 4:
            return 0
        node, depth = 0, 0
        zero = np.zeros(1, dtype=np.uint64)
        while depth < 96 and node < self.node_count:
            node = int(self._records(np.array([node], dtype=np.int64), zero)[0])
            depth += 1
        return node

    def _trial(self) -> None:
        """Looks up PROBES (tree walk + record decode) so that a broken database
        is rejected at open rather than at the first flow."""
        addrs = [ipaddress.ip_address(p) for p in PROBES]
        if self.ip_version == 4:
            addrs = [a for a in addrs if a.version == 4]
        canon = canonical_from_ips(addrs)
        self.lookup(canon)

    # -- lookups -------------------------------------------------------------
    def _tree_view(self) -> np.ndarray:
        """The search tree as a record array of two unaligned big-endian u32
        fields per node, from which each record is masked out (no copy)."""
        right = {24: 2, 28: 3, 32: 4}[self.record_size]
        dt = np.dtype(
            {
                "names": ["l", "r"],
                "formats": [">u4", ">u4"],
                "offsets": [0, right],
                "itemsize": self._node_bytes,
            }
        )
        return np.frombuffer(self._map, dtype=dt, count=self.node_count)

    def _records(self, nodes: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """The left (bit 0) or right (bit 1) record of each node, as int64."""
        left = self._tree["l"][nodes].astype(np.int64)
        right = self._tree["r"][nodes].astype(np.int64)
        if self.record_size == 24:
            left >>= 8
            right &= 0xFFFFFF
        elif self.record_size == 28:
            # the middle byte holds the high nibbles: left's high, right's low
            left = (left >> 8) | ((left & 0xF0) << 20)
            right &= 0x0FFFFFFF
        rec: np.ndarray = np.where(bits != 0, right, left)
        return rec

    def _walk(
        self, hi: np.ndarray, lo: np.ndarray, is4: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(terminal record value, prefix length in bits of the address family;
        -1 when the whole IPv4 space is one record)."""
        n = len(hi)
        rec = np.full(n, self.node_count, dtype=np.int64)  # default: no data
        plen = np.zeros(n, dtype=np.int64)
        v4 = np.flatnonzero(is4)
        if v4.size:
            if self._v4_start >= self.node_count:
                rec[v4], plen[v4] = self._v4_start, -1
            else:
                words = lo[v4] << np.uint64(32)  # the IPv4 address in the top bits
                self._walk_group(v4, words, words, 32, self._v4_start, rec, plen)
        v6 = np.flatnonzero(~is4)
        if v6.size and self.ip_version == 6:  # an IPv4 database knows no IPv6
            self._walk_group(v6, hi[v6], lo[v6], 128, 0, rec, plen)
        return rec, plen

    def _walk_group(
        self,
        idx: np.ndarray,
        hi: np.ndarray,
        lo: np.ndarray,
        nbits: int,
        start: int,
        rec: np.ndarray,
        plen: np.ndarray,
    ) -> None:
        """Walks addresses idx (bits from the top of hi, then lo) in lockstep."""
        cur = np.full(len(idx), start, dtype=np.int64)
        one = np.uint64(1)
        for depth in range(nbits + 1):
            done = cur >= self.node_count
            if done.any():
                fin = idx[done]
                rec[fin], plen[fin] = cur[done], depth
                keep = ~done
                idx, cur, hi, lo = idx[keep], cur[keep], hi[keep], lo[keep]
                if not idx.size:
                    return
            if depth == nbits:
                raise MmdbError("corrupt search tree (no record after all address bits)")
            if depth < 64:
                bits = (hi >> np.uint64(63 - depth)) & one
            else:
                bits = (lo >> np.uint64(127 - depth)) & one
            cur = self._records(cur, bits)

    def lookup(self, canon: np.ndarray) -> np.ndarray:
        """Result ids (into `results`) for canonical 16-byte addresses (n, 16) u1."""
        n = len(canon)
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        hi, lo, is4 = split_words(canon)
        rec, plen = self._walk(hi, lo, is4)
        out = np.zeros(n, dtype=np.int32)
        data = rec > self.node_count
        if not data.any():
            return out
        off = rec[data] - self.node_count - 16
        if (off < 0).any() or (off >= self._data_size).any():
            raise MmdbError("corrupt search tree (record points outside the data section)")
        idx = np.flatnonzero(data)
        recs = rec[idx]
        uniq, first = np.unique(recs, return_index=True)
        by_record = self._by_record
        for r, i in zip(uniq.tolist(), first.tolist(), strict=True):
            if r not in by_record:
                j = int(idx[i])
                by_record[r] = self._decode(canon[j], bool(is4[j]), int(plen[j]))
        table = np.fromiter((by_record[r] for r in uniq.tolist()), np.int32, len(uniq))
        out[idx] = table[np.searchsorted(uniq, recs)]
        return out

    def _decode(self, addr16: np.ndarray, is4: bool, plen: int) -> int:
        ip = text_of(addr16, is4)
        try:
            got = self._reader.get_with_prefix_len(ip)
        except Exception as e:  # corrupt data: libmaxminddb raises, never crashes
            raise MmdbError(f"corrupt data ({one_line(e)})") from None
        if not (isinstance(got, tuple) and len(got) == 2):
            raise MmdbError("unexpected reader result")
        rec, c_plen = got
        if rec is None or (plen >= 0 and c_plen != plen):
            raise MmdbError(f"inconsistent search tree at {ip} (prefix /{plen} vs /{c_plen})")
        try:
            fields = self._extract(rec)
        except Exception as e:  # hostile structure the validators did not expect
            raise MmdbError(f"malformed record for {ip} ({one_line(e)})") from None
        rid = self._result_ids.get(fields)
        if rid is None:
            rid = len(self.results)
            self.results.append(fields)
            self._result_ids[fields] = rid
        return rid

    def describe(self) -> Description:
        return Description(self.path, self.database_type, self.build)

    def close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
        self._tree = np.zeros(0)
        m = getattr(self, "_map", None)
        if m is not None:
            # a numpy view still alive somewhere: the map is freed with it
            with contextlib.suppress(BufferError):
                m.close()


# --------------------------------------------------------------------------- #
# canonical addresses: 16 bytes, IPv4 as ::ffff:a.b.c.d
# --------------------------------------------------------------------------- #

V4_MAPPED = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


_MAPPED_WORD = np.frombuffer(b"\x00\x00\xff\xff", dtype=np.uint32)[0]


def canonical(addrs: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """(n, 16) u1 canonical addresses of flow-key addresses (V16, IPv4 in the
    first 4 bytes) and their IP versions (4/6; anything else: as IPv6)."""
    # 32-bit words in memory order: column-wise np.where, no masked 2-D copies
    w = np.ascontiguousarray(addrs).view(np.uint32).reshape(-1, 4)
    v4 = np.asarray(versions) == 4
    out = np.empty_like(w)
    out[:, 0] = np.where(v4, 0, w[:, 0])
    out[:, 1] = np.where(v4, 0, w[:, 1])
    out[:, 2] = np.where(v4, _MAPPED_WORD, w[:, 2])
    out[:, 3] = np.where(v4, w[:, 0], w[:, 3])
    return out.view(np.uint8).reshape(-1, 16)


def canonical_from_ips(ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> np.ndarray:
    out = np.zeros((len(ips), 16), dtype=np.uint8)
    for i, ip in enumerate(ips):
        if ip.version == 4:
            out[i, 0:12] = V4_MAPPED
            out[i, 12:16] = np.frombuffer(ip.packed, dtype=np.uint8)
        else:
            out[i] = np.frombuffer(ip.packed, dtype=np.uint8)
    return out


def split_words(canon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(high 64 bits, low 64 bits, is IPv4) of canonical addresses, host order."""
    words = np.ascontiguousarray(canon).view(">u8").reshape(-1, 2).astype(np.uint64)
    hi, lo = words[:, 0], words[:, 1]
    is4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    return hi, lo, is4


def text_of(addr16: np.ndarray, is4: bool) -> str:
    b = bytes(addr16)
    if is4:
        return str(ipaddress.IPv4Address(b[12:16]))
    return str(ipaddress.IPv6Address(b))
