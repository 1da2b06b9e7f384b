"""The Enricher: what is known about an address (ASN, country, city, label,
local), as small integer entity ids the flow table stores per flow end.

`lookup()` takes the raw addresses of flow keys (V16 + IP version) for a whole
batch: duplicates are folded with numpy, addresses seen before come from a
cache (address -> entity id), and only new ones go through the MMDB tree walks
(geo.py) and the label/local prefix tables (labels.py), all vectorised. Equal
results share one `Entity`; `entities` only grows, so an id stays valid for the
life of the process, even across database reloads.

Databases that are missing, unreadable, corrupt, of the wrong type or that
fail at a later lookup give one warning through `warn` and are disabled; the
Enricher itself never raises for them. A bad labels file is a configuration
error (`ConfigError`) at start; at a reload it is a warning and the previous
labels stay.

One caller: the engine thread calls lookup()/maybe_reload(); other threads may
read `entities`/`entity()` (append-only list).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from flowtop.enrich import geo
from flowtop.enrich.geo import KIND_ASN, KIND_CITY, MmdbDatabase, MmdbError
from flowtop.enrich.labels import LabelSet, Network, PrefixTable, host_networks, load_labels
from flowtop.enrich.text import safe_text
from flowtop.errors import ConfigError

log = logging.getLogger("flowtop.enrich")

Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Entity:
    """What is known about one address; every str is already cleaned."""

    asn: int | None = None
    as_org: str | None = None
    country: str | None = None  # ISO 3166 code, e.g. "US"
    city: str | None = None
    label: str | None = None  # CIDR label name
    zone: str | None = None  # the label's zone=..., else the host zone for a local address
    local: bool = False  # address is in one of this host's networks


NOTHING = Entity()


@dataclass(frozen=True)
class EnrichOptions:
    geoip_asn: str | None = None  # path; None = search default_dirs
    geoip_city: str | None = None  # City or Country database
    labels: str | None = None  # labels file path
    search_default_paths: bool = True
    # None = detect from this host's (current netns) interface addresses
    local_networks: Sequence[Network] | None = None
    default_dirs: Sequence[str] = geo.DEFAULT_DIRS
    cache_max: int = 1 << 20  # addresses remembered; the cache is emptied when full
    local_refresh_s: float = 30.0  # re-read interface addresses (auto-detect only)
    # The zone of this host's own addresses (local networks) that no label
    # gives a zone: config [enrich] host_zone.
    host_zone: str | None = None


_DISABLED = {KIND_ASN: "ASN enrichment disabled", KIND_CITY: "city/country enrichment disabled"}


class _DbSlot:
    """One configured database (ASN or City): open, reload, disable on error."""

    def __init__(
        self,
        option: str,
        kind: str,
        path: str | None,
        search: bool,
        dirs: Sequence[str],
        warn: Warn,
    ) -> None:
        self.option = option
        self.kind = kind
        self.explicit = path
        self.search = search and path is None
        self.dirs = tuple(dirs)
        self.warn = warn
        self.db: MmdbDatabase | None = None
        self.reason: str | None = None  # why there is no database
        self.refused: tuple[str, geo.FileSig | None] | None = None  # version not to retry
        self._warned: tuple[str, str] | None = None
        self.generation = 0  # bumped whenever result ids change meaning
        self.errors = 0

    def path(self) -> str | None:
        if self.explicit is not None:
            return self.explicit
        if self.search:
            return geo.find_default(self.kind, self.dirs)
        return None

    def _warn(self, path: str, reason: str, keeping: bool) -> None:
        if self._warned == (path, reason):
            return
        self._warned = (path, reason)
        tail = "keeping the database loaded before" if keeping else _DISABLED[self.kind]
        self.warn(f"{self.option}: {safe_text(path)}: {reason}; {tail}")

    def load(self) -> bool:
        """Opens the configured file if it is new or changed; True if a new one is in use."""
        path = self.path()
        if path is None:
            return False
        sig = geo.file_sig(path)
        if self.db is not None and (path, sig) == (self.db.path, self.db.sig):
            return False
        if sig is None and self.db is not None:
            return False  # gone from disk: keep using the copy we have
        if self.refused == (path, sig):
            return False
        try:
            new = MmdbDatabase(path, self.kind)
        except MmdbError as e:
            self.errors += 1
            self.refused = (path, sig)
            if self.db is None:
                self.reason = f"{safe_text(path)}: {e}"
            self._warn(path, str(e), keeping=self.db is not None)
            return False
        old, self.db = self.db, new
        self.reason = self.refused = self._warned = None
        self.generation += 1
        if old is not None:
            old.close()
        return True

    def lookup(self, canon: np.ndarray) -> np.ndarray:
        if self.db is None:
            return np.zeros(len(canon), dtype=np.int32)
        try:
            return self.db.lookup(canon)
        except MmdbError as e:
            self._fail(str(e))
        except Exception as e:  # hostile data must never stop the engine
            self._fail(f"lookup failed ({geo.one_line(e)})")
        return np.zeros(len(canon), dtype=np.int32)

    def _fail(self, reason: str) -> None:
        db = self.db
        assert db is not None
        self.errors += 1
        self.refused = (db.path, db.sig)
        self.reason = f"{safe_text(db.path)}: {reason}"
        self._warn(db.path, reason, keeping=False)
        self.db = None
        self.generation += 1
        db.close()

    def fields(self, rid: int) -> tuple[object, ...]:
        return self.db.results[rid] if self.db is not None else (None, None)

    def status(self) -> str:
        if self.db is not None:
            d = self.db.describe()
            return f"{safe_text(d.path)} ({d.database_type}, built {d.build})"
        if self.reason is not None:
            return f"disabled: {self.reason}"
        if self.search:
            return "not found in " + ", ".join(self.dirs)
        return "off"

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


_M22, _M18 = (1 << 22) - 1, (1 << 18) - 1  # field masks of a packed combo
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)


class Enricher:
    def __init__(self, options: EnrichOptions, warn: Warn = log.warning) -> None:
        self.options = options
        self._warn = warn
        search = options.search_default_paths
        dirs = options.default_dirs
        self._asn = _DbSlot("geoip-asn", KIND_ASN, options.geoip_asn, search, dirs, warn)
        self._city = _DbSlot("geoip-city", KIND_CITY, options.geoip_city, search, dirs, warn)
        self._labels: LabelSet | None = None
        if options.labels is not None:
            self._labels = load_labels(options.labels)  # ConfigError: the caller's to report
        self._auto_local = options.local_networks is None
        self._local_nets: list[Network] = []
        self._local: PrefixTable | None = None
        self._local_checked = 0.0
        self._set_local(
            self._detect_local() if options.local_networks is None else options.local_networks
        )
        self.entities: list[Entity] = [NOTHING]
        self._entity_ids: dict[Entity, int] = {NOTHING: 0}
        self._asn_by_eid = np.zeros(64, dtype=np.uint32)
        self._cache = _AddressCache()
        self._combos: dict[tuple[int, int, int, bool], int] = {}
        self._gens = (0, 0)
        self._stats = dict.fromkeys(
            ("addresses", "cache_hits", "cache_misses", "cache_clears", "reloads"), 0
        )
        self._label_errors = 0  # labels files refused at a reload (the old labels stayed)
        self._closed = False
        try:
            for slot in (self._asn, self._city):
                slot.load()
        except BaseException:  # the ASN database may be open already
            self.close()
            raise
        self._gens = (self._asn.generation, self._city.generation)

    # -- local networks ------------------------------------------------------
    def _detect_local(self) -> list[Network]:
        self._local_checked = time.monotonic()
        try:
            return host_networks()
        except Exception as e:  # netlink trouble: no local marking, not fatal
            self._warn(f"local networks: cannot read interface addresses ({geo.one_line(e)})")
            return list(self._local_nets)

    def _set_local(self, nets: Sequence[Network]) -> None:
        self._local_nets = list(nets)
        self._local = PrefixTable([(n, 0) for n in set(nets)]) if nets else None

    @property
    def local_networks(self) -> list[Network]:
        return list(self._local_nets)

    # -- lookups -------------------------------------------------------------
    def lookup(self, addrs: np.ndarray, versions: np.ndarray) -> np.ndarray:
        """Entity ids (int32) of flow-key addresses (V16, IPv4 in the first 4
        bytes) with their IP versions (4/6; anything else gets id 0)."""
        addrs = np.asarray(addrs)
        versions = np.asarray(versions)
        n = len(addrs)
        out = np.zeros(n, dtype=np.int32)
        if n == 0:
            return out
        ok = (versions == 4) | (versions == 6)
        if not ok.all():
            sel = np.flatnonzero(ok)
            out[sel] = self.lookup(addrs[sel], versions[sel])
            return out
        canon = geo.canonical(addrs, versions)
        words = canon.view(">u8").reshape(-1, 2).astype(np.uint64)
        hi, lo = words[:, 0], words[:, 1]
        h = _hash(hi, lo)
        ids = self._cache.get(h, hi, lo)
        miss = np.flatnonzero(ids < 0)
        st = self._stats
        st["addresses"] += n
        st["cache_hits"] += n - int(miss.size)
        if miss.size:
            mh, mhi, mlo, mcanon = h[miss], hi[miss], lo[miss], canon[miss]
            first, inv = _unique_rows(mcanon, mh, mhi, mlo)
            st["cache_misses"] += len(first)
            eids = self._resolve(mcanon[first])
            ids[miss] = eids[inv]
            if len(self._cache) + len(first) > self.options.cache_max:
                self._cache.clear()
                st["cache_clears"] += 1
            self._cache.add(mh[first], mhi[first], mlo[first], eids)
        return ids

    def _resolve(self, canon: np.ndarray) -> np.ndarray:
        """Entity ids of distinct addresses not in the cache."""
        asn_ids = self._asn.lookup(canon)
        city_ids = self._city.lookup(canon)
        gens = (self._asn.generation, self._city.generation)
        if gens != self._gens:  # a database was disabled meanwhile: ids changed meaning
            self._invalidate()
            self._gens = gens
        m = len(canon)
        labels = self._labels
        lab = labels.table.match(canon) if labels is not None else np.full(m, -1, np.int32)
        loc = self._local.match(canon) >= 0 if self._local is not None else np.zeros(m, bool)
        # one Python step per distinct (asn record, city record, label, local)
        lab1 = lab.astype(np.int64) + 1
        if asn_ids.max() <= _M22 and city_ids.max() <= _M22 and lab1.max() <= _M18:
            packed = (
                (asn_ids.astype(np.int64) << 41)
                | (city_ids.astype(np.int64) << 19)
                | (lab1 << 1)
                | loc.astype(np.int64)
            )
            uniq, inv = np.unique(packed, return_inverse=True)
            table = np.empty(len(uniq), dtype=np.int32)
            for j, p in enumerate(uniq.tolist()):
                combo = (p >> 41, (p >> 19) & _M22, ((p >> 1) & _M18) - 1, bool(p & 1))
                table[j] = self._entity_of(combo)
            out: np.ndarray = table[inv.ravel()]
            return out
        eids = np.empty(m, dtype=np.int32)
        for i, combo in enumerate(
            zip(asn_ids.tolist(), city_ids.tolist(), lab.tolist(), loc.tolist(), strict=True)
        ):
            eids[i] = self._entity_of(combo)
        return eids

    def _entity_of(self, combo: tuple[int, int, int, bool]) -> int:
        eid = self._combos.get(combo)
        if eid is None:
            eid = self._combos[combo] = self._entity_for(*combo)
        return eid

    def _entity_for(self, asn_id: int, city_id: int, label_id: int, local: bool) -> int:
        asn, org = self._asn.fields(asn_id)
        country, city = self._city.fields(city_id)
        label = self._labels.labels[label_id] if label_id >= 0 and self._labels else None
        ent = Entity(
            asn=asn if isinstance(asn, int) else None,
            as_org=org if isinstance(org, str) else None,
            country=country if isinstance(country, str) else None,
            city=city if isinstance(city, str) else None,
            label=label.name if label else None,
            zone=(label.zone if label else None) or (self.options.host_zone if local else None),
            local=bool(local),
        )
        eid = self._entity_ids.get(ent)
        if eid is None:
            eid = len(self.entities)
            if eid >= len(self._asn_by_eid):
                grown = np.zeros(2 * len(self._asn_by_eid), dtype=np.uint32)
                grown[: len(self._asn_by_eid)] = self._asn_by_eid
                self._asn_by_eid = grown
            self._asn_by_eid[eid] = ent.asn or 0
            self.entities.append(ent)
            self._entity_ids[ent] = eid
        return eid

    def entity(self, eid: int) -> Entity:
        """The entity of an id; NOTHING for ids < 0 (not looked up) or unknown."""
        if 0 <= eid < len(self.entities):
            return self.entities[eid]
        return NOTHING

    def asn_of(self, eids: np.ndarray) -> np.ndarray:
        """uint32 ASN per entity id (0 = unknown, also for ids < 0)."""
        eids = np.asarray(eids, dtype=np.int64)
        table = self._asn_by_eid
        valid = (eids >= 0) & (eids < len(self.entities))
        return np.where(valid, table[np.where(valid, eids, 0)], 0).astype(np.uint32)

    # -- reloads -------------------------------------------------------------
    def _invalidate(self) -> None:
        self._cache.clear()
        self._combos.clear()

    def maybe_reload(self) -> bool:
        """Picks up replaced databases, a changed labels file and (auto-detected)
        changed local networks. A stat() per file when nothing changed. True if
        anything changed; then the address cache is dropped (ids stay valid)."""
        if self._closed:
            return False
        changed = False
        for slot in (self._asn, self._city):
            changed |= slot.load()
        gens = (self._asn.generation, self._city.generation)
        if gens != self._gens:
            self._gens = gens
            changed = True
        if self._labels is not None:
            changed |= self._reload_labels(self._labels)
        if (
            self._auto_local
            and time.monotonic() - self._local_checked >= self.options.local_refresh_s
        ):
            nets = self._detect_local()
            if set(nets) != set(self._local_nets):
                self._set_local(nets)
                changed = True
        if changed:
            self._invalidate()
            self._stats["reloads"] += 1
        return changed

    def _reload_labels(self, cur: LabelSet) -> bool:
        sig = geo.file_sig(cur.path)
        if sig is None or sig == cur.sig:
            return False
        try:
            new = load_labels(cur.path)
        except ConfigError as e:
            cur.sig = sig  # warn once per version of the file
            self._label_errors += 1
            self._warn(f"{e}; keeping the labels loaded before")
            return False
        self._labels = new
        return True

    # -- reporting -----------------------------------------------------------
    def status(self) -> dict[str, str]:
        out = {"geoip-asn": self._asn.status(), "geoip-city": self._city.status()}
        if self._labels is not None:
            out["labels"] = f"{self._labels.prefixes} prefixes from {safe_text(self._labels.path)}"
        else:
            out["labels"] = "none"
        how = "from interface addresses" if self._auto_local else "given"
        out["local-networks"] = f"{len(self._local_nets)} networks {how}"
        return out

    def stats(self) -> dict[str, int]:
        """Counters: addresses looked up, cache hits/misses/size/clears, entities,
        reloads, database errors (open or lookup failures), labels files refused."""
        out = dict(self._stats)
        out["cache_size"] = len(self._cache)
        out["entities"] = len(self.entities)
        out["db_errors"] = self._asn.errors + self._city.errors
        out["label_errors"] = self._label_errors
        return out

    @property
    def errors(self) -> int:
        """Failures so far: databases that could not be opened or read, labels
        files refused at a reload (the engine shows them as enrich_errors)."""
        return self._asn.errors + self._city.errors + self._label_errors

    @property
    def zoned(self) -> bool:
        """Any zone configured: a host zone, or a label with zone=."""
        if self.options.host_zone:
            return True
        return self._labels is not None and any(lb.zone for lb in self._labels.labels)

    @property
    def active(self) -> bool:
        """Any source of information: a database, labels or local networks."""
        return bool(
            self._asn.db is not None
            or self._city.db is not None
            or (self._labels is not None and self._labels.prefixes)
            or self._local_nets
        )

    def close(self) -> None:
        """Unmaps both databases; safe to call twice. A closed enricher opens
        nothing again (maybe_reload is a no-op) and looks everything up as unknown."""
        self._closed = True
        try:
            self._asn.close()
        finally:
            self._city.close()


def _hash(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    h: np.ndarray = (hi * _K1) ^ ((lo ^ (lo >> np.uint64(29))) * _K2)
    return h


def _unique_rows(
    canon: np.ndarray, h: np.ndarray, hi: np.ndarray, lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first occurrence of each distinct address, inverse map)."""
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.ravel()
    if (hi[first][inv] == hi).all() and (lo[first][inv] == lo).all():
        return first, inv
    # two addresses with one hash (never seen; 64-bit): exact, slower path
    _, first, inv = np.unique(
        np.ascontiguousarray(canon).view("S16").ravel(), return_index=True, return_inverse=True
    )
    return first, inv.ravel()


class _AddressCache:
    """Address -> entity id, as sorted numpy arrays keyed by a 64-bit hash of
    the address (the full address is stored and compared): a batch is looked
    up with one searchsorted, without Python work per address."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._h = np.zeros(0, dtype=np.uint64)
        self._hi = np.zeros(0, dtype=np.uint64)
        self._lo = np.zeros(0, dtype=np.uint64)
        self._eid = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._h)

    def get(self, h: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Entity id per address, -1 where not cached."""
        out = np.full(len(h), -1, dtype=np.int32)
        size = len(self._h)
        if size == 0:
            return out
        pos = np.minimum(np.searchsorted(self._h, h), size - 1)
        hit = (self._h[pos] == h) & (self._hi[pos] == hi) & (self._lo[pos] == lo)
        out[hit] = self._eid[pos[hit]]
        return out

    def add(self, h: np.ndarray, hi: np.ndarray, lo: np.ndarray, eid: np.ndarray) -> None:
        """Adds distinct, uncached addresses. One whose hash is already taken by
        another address is not cached (it is looked up again next time)."""
        order = np.argsort(h, kind="stable")
        h, hi, lo, eid = h[order], hi[order], lo[order], eid[order]
        pos = np.searchsorted(self._h, h)
        taken = self._h[np.minimum(pos, len(self._h) - 1)] == h if len(self._h) else None
        if taken is not None and taken.any():
            keep = ~taken
            h, hi, lo, eid, pos = h[keep], hi[keep], lo[keep], eid[keep], pos[keep]
        self._h = np.insert(self._h, pos, h)
        self._hi = np.insert(self._hi, pos, hi)
        self._lo = np.insert(self._lo, pos, lo)
        self._eid = np.insert(self._eid, pos, eid)


def parse_networks(texts: Sequence[str]) -> list[Network]:
    """Networks from strings ('10.0.0.0/8'); a bad one is a ConfigError."""
    out: list[Network] = []
    for t in texts:
        try:
            out.append(ipaddress.ip_network(t, strict=False))
        except ValueError as e:
            raise ConfigError(f"local network {safe_text(t, 64)!r}: {e}") from None
    return out
