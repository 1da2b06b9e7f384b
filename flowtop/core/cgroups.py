"""cgroup v2 ids to paths, and paths to the workload they belong to.

The kernel names a socket's cgroup by its id (bpf_get_current_cgroup_id,
bpf_skb_cgroup_id): the inode number of the cgroup's directory on the cgroup
v2 mount. `CgroupPaths` turns ids into paths relative to the mount
(``/system.slice/nginx.service``) by walking the hierarchy; `classify` turns a
path into a `Workload`: the systemd unit, the container id and the kubelet
pod UID it shows.

Path shapes recognised (as the runtimes write them; tests/unit/test_cgroups.py
has one real example of each):

- systemd units: ``/system.slice/nginx.service``, ``/user.slice/user-1000.slice/session-2.scope``
- docker: ``/system.slice/docker-<id>.scope`` (systemd driver), ``/docker/<id>`` (cgroupfs)
- containerd (CRI): ``.../cri-containerd-<id>.scope``, cgroupfs ``/kubepods/<qos>/pod<uid>/<id>``
- podman: ``/machine.slice/libpod-<id>.scope`` (plus ``/container`` below it);
  ``libpod-conmon-<id>.scope`` is the monitor, not the container
- cri-o: ``.../crio-<id>.scope`` (``crio-<id>`` for a pod sandbox);
  ``crio-conmon-<id>.scope`` is the monitor
- kubelet pods: ``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, _ for ->.slice``
  (systemd driver), ``/kubepods/<qos>/pod<uid>/`` or ``/kubepods/pod<uid>/`` (cgroupfs)

Directory names are untrusted text (anyone with a delegated subtree names
them): the classification reads the raw names, and everything stored for
display (the path, the service name) goes through flowtop.sanitize.clean.
Container ids and pod UIDs are matched as hex/UUID text, so they are clean
by construction.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flowtop.sanitize import clean

# Display bounds: a cgroup path may be 4 KB and more (255-byte names, nested).
PATH_MAX_LEN = 512
NAME_MAX_LEN = 128

# A container id as the runtimes write it: 64 hex digits (docker, containerd,
# cri-o, podman), shorter ones accepted for runtimes that abbreviate.
_ID = r"[0-9a-f]{12,64}"
# Unit names whose id is a container's (the innermost one wins). The conmon
# monitors (libpod-conmon-, crio-conmon-) do not match: their id part would
# start with "conmon-", which is not hex.
_CONTAINER_UNIT = re.compile(rf"(?:docker|cri-containerd|libpod|crio)-({_ID})(?:\.scope)?")
_BARE_ID = re.compile(_ID)
_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# kubepods-pod<uid>.slice, kubepods-besteffort-pod<uid>.slice (systemd driver)
_POD_SLICE = re.compile(rf"kubepods(?:-[a-z]+)?-pod({_UUID})\.slice")
# pod<uid> under /kubepods (cgroupfs driver)
_POD_DIR = re.compile(rf"pod({_UUID})")
_UNIT = re.compile(r".+\.(?:service|scope)")


@dataclass(frozen=True, slots=True)
class Workload:
    """What a cgroup path says about who runs in it; None where it says nothing.

    service: the innermost systemd unit (``nginx.service``, ``session-2.scope``)
    that is not a container's scope, cleaned for display; container: the
    container id (lowercase hex); pod: the kubelet pod UID (dashed, lowercase).
    """

    service: str | None = None
    container: str | None = None
    pod: str | None = None


NO_WORKLOAD = Workload()


def classify(path: str) -> Workload:
    """The workload a cgroup v2 path (relative to the mount) belongs to."""
    parts = [p for p in path.split("/") if p]
    service: str | None = None
    container: str | None = None
    pod: str | None = None
    in_kubepods = False
    for i, name in enumerate(parts):
        m = _CONTAINER_UNIT.fullmatch(name)
        if m:
            container = m.group(1)
            continue
        if name == "kubepods" or name.startswith("kubepods-") or name == "kubepods.slice":
            in_kubepods = True
        m = _POD_SLICE.fullmatch(name)
        if m is None and in_kubepods:
            m = _POD_DIR.fullmatch(name)
        if m:
            pod = m.group(1).replace("_", "-")
            continue
        parent = parts[i - 1] if i else ""
        # cgroupfs drivers name the container's directory by its bare id:
        # /docker/<id>, /kubepods/<qos>/pod<uid>/<id>.
        if (parent == "docker" or (pod is not None and _POD_DIR.fullmatch(parent))) and (
            _BARE_ID.fullmatch(name)
        ):
            container = name
            continue
        if _UNIT.fullmatch(name):
            service = name
    if service is not None:
        service = clean(service, NAME_MAX_LEN).strip() or None
    return Workload(service, container, pod)


def _walk(root: str) -> Iterator[tuple[int, str]]:
    """(cgroup id, path relative to root) of every cgroup under root, root
    itself as "/". Directories that vanish or cannot be read are skipped."""
    try:
        yield os.stat(root).st_ino, "/"
    except OSError:
        return
    stack = [(root, "")]
    while stack:
        where, rel = stack.pop()
        try:
            with os.scandir(where) as it:
                for entry in it:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        # kernfs returns the directory's inode (the cgroup id)
                        # in d_ino, so no stat per cgroup.
                        ino = entry.inode()
                    except OSError:
                        continue
                    sub = f"{rel}/{entry.name}"
                    yield ino, sub
                    stack.append((entry.path, sub))
        except OSError:
            continue


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """One cgroup as shown: its path relative to the mount, cleaned and
    bounded for display, and its workload (from the raw path)."""

    path: str
    workload: Workload


class CgroupPaths:
    """cgroup v2 id -> `CgroupInfo`, by walking the hierarchy under `root`
    (kernel/cgroup.find_cgroup2()) once, and again on a miss at most once
    per `rewalk_interval` seconds (a cgroup made after the last walk). At
    most `max_entries` cgroups are kept (the least recently asked go first);
    ids still unknown after a walk count in `misses`."""

    def __init__(
        self,
        root: str | None,
        max_entries: int = 65536,
        rewalk_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.max_entries = max_entries
        self.rewalk_interval = rewalk_interval
        self._clock = clock
        self._cache: OrderedDict[int, CgroupInfo] = OrderedDict()
        self._last_walk: float | None = None
        self.misses = 0  # lookups of ids no walk found
        self.walks = 0
        self.evicted = 0  # entries dropped to stay within max_entries

    def __len__(self) -> int:
        return len(self._cache)

    def _put(self, cgid: int, raw: str) -> None:
        self._cache[cgid] = CgroupInfo(clean(raw, PATH_MAX_LEN), classify(raw))
        self._cache.move_to_end(cgid)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
            self.evicted += 1

    def walk(self) -> None:
        """Reads the whole hierarchy now (a full rewalk)."""
        self._last_walk = self._clock()
        self.walks += 1
        if self.root is None:
            return
        for cgid, raw in _walk(self.root):
            # cgroup ids are not reused while the system runs, so a known id
            # keeps its entry (a cgroup renamed in place keeps its old path).
            # Names are bytes on disk; surrogateescape keeps undecodable ones
            # distinct for classification, clean() drops them for display.
            if cgid not in self._cache:
                self._put(cgid, raw)

    def get(self, cgid: int) -> CgroupInfo | None:
        """The cgroup of an id, None when no walk (rate-limited) finds it."""
        info = self._cache.get(cgid)
        if info is not None:
            self._cache.move_to_end(cgid)
            return info
        now = self._clock()
        if self._last_walk is None or now - self._last_walk >= self.rewalk_interval:
            self.walk()
            info = self._cache.get(cgid)
            if info is not None:
                return info
        self.misses += 1
        return None

    def path(self, cgid: int) -> str | None:
        info = self.get(cgid)
        return info.path if info is not None else None

    def workload(self, cgid: int) -> Workload:
        info = self.get(cgid)
        return info.workload if info is not None else NO_WORKLOAD
