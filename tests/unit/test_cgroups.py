"""cgroup paths -> workloads (service, container, pod), and the id -> path cache.

The path shapes are the runtimes' own, as reported in their trackers and docs
(each test names where the example comes from); the hostile ones are what
anyone with a delegated cgroup subtree can name a directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowtop.core.cgroups import NAME_MAX_LEN, PATH_MAX_LEN, CgroupPaths, Workload, classify

ID64 = "c8b38413c88eefe063b8cd3f01c16be5e3bda9693a19a68a88807baca9feb937"


def test_systemd_units() -> None:
    assert classify("/system.slice/nginx.service") == Workload(service="nginx.service")
    assert classify("/user.slice/user-1000.slice/session-2.scope") == Workload(
        service="session-2.scope"
    )
    # the innermost unit: a service's own sub-cgroups (Delegate=yes) keep it
    assert classify("/system.slice/foo.service/payload") == Workload(service="foo.service")
    assert classify("/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope") == (
        Workload(service="x.scope")
    )
    assert classify("/") == Workload()
    assert classify("/system.slice") == Workload()
    assert classify("/init.scope") == Workload(service="init.scope")


def test_docker() -> None:
    # systemd cgroup driver (dockerd --exec-opt native.cgroupdriver=systemd)
    assert classify(f"/system.slice/docker-{ID64}.scope") == Workload(container=ID64)
    # cgroupfs driver
    assert classify(f"/docker/{ID64}") == Workload(container=ID64)
    # docker in docker: the innermost container
    inner = "0" * 64
    assert classify(f"/docker/{ID64}/docker/{inner}").container == inner
    # not an id: a directory named like one but too short / not hex
    assert classify("/docker/notanid").container is None
    assert classify("/docker/abc").container is None


def test_kubernetes_systemd_driver() -> None:
    # kinvolk/traceloop#34 (docker runtime under kubelet, systemd driver)
    p = (
        "/kubepods.slice/kubepods-besteffort.slice/"
        "kubepods-besteffort-pod5759a1ae_36ca_48a8_b20a_b0b5c8a90fb8.slice/"
        f"docker-{ID64}.scope"
    )
    assert classify(p) == Workload(container=ID64, pod="5759a1ae-36ca-48a8-b20a-b0b5c8a90fb8")
    # cri-o (opencontainers/runc#4620)
    crio = "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"
    p = (
        "/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/"
        f"crio-{crio}.scope"
    )
    assert classify(p) == Workload(container=crio, pod="a5c1f8d5-1919-434d-add7-4afaafdaef89")
    # a cri-o pod sandbox has no .scope (containerd/nri#227)
    sandbox = "0f2b016bbc95b352c2b4287b3b654cb234b95efdeea1b35a170a6ed572ac2692"
    p = (
        "/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod38186edb_96bd_4383_baf7_3b4edf3b5937.slice/crio-{sandbox}"
    )
    assert classify(p) == Workload(container=sandbox, pod="38186edb-96bd-4383-baf7-3b4edf3b5937")
    # guaranteed QoS: no QoS slice
    p = (
        "/kubepods.slice/kubepods-pod12345678_1234_1234_1234_123456789012.slice/"
        f"cri-containerd-{ID64}.scope"
    )
    assert classify(p) == Workload(container=ID64, pod="12345678-1234-1234-1234-123456789012")


def test_kubernetes_cgroupfs_driver() -> None:
    # Qard/container-info fixtures (containerd, cgroupfs)
    cid = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"
    p = f"/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/{cid}"
    assert classify(p) == Workload(container=cid, pod="74c13223-5a00-11e9-b385-42010a80018d")
    # guaranteed: /kubepods/pod<uid>/<id>
    p = f"/kubepods/pod74c13223-5a00-11e9-b385-42010a80018d/{cid}"
    assert classify(p) == Workload(container=cid, pod="74c13223-5a00-11e9-b385-42010a80018d")
    # a pod's own cgroup, no container
    p = "/kubepods/burstable/pod74c13223-5a00-11e9-b385-42010a80018d"
    assert classify(p) == Workload(pod="74c13223-5a00-11e9-b385-42010a80018d")
    # "pod<uid>" outside kubepods is just a name
    assert classify("/pod74c13223-5a00-11e9-b385-42010a80018d").pod is None


def test_containerd_outside_kubernetes() -> None:
    # containerd/cri#290: cri-containerd scope under an arbitrary parent slice
    cid = "0e768f8db752fcd648adb264498daa1d8f31562320e881d6a9ec593d24b1f779"
    p = f"/system.slice/system-getty.slice/cri-containerd-{cid}.scope"
    assert classify(p) == Workload(container=cid)


def test_podman_and_conmon() -> None:
    # podman-container-tools/podman#20423: rootful, systemd driver, with /container
    cid = "cf21d19260ace8544fe8b769fc2638bf2c0873dfbfff0b6253f0569b26a1d5eb"
    p = f"/user.slice/user-0.slice/user@0.service/machine.slice/libpod-{cid}.scope/container"
    assert classify(p) == Workload(service="user@0.service", container=cid)
    assert classify(f"/machine.slice/libpod-{cid}.scope") == Workload(container=cid)
    # conmon, the monitor, is not the container (its scope is a unit like any)
    conmon = f"/machine.slice/libpod-conmon-{cid}.scope"
    assert classify(conmon) == Workload(service=f"libpod-conmon-{cid}.scope")
    # cri-o's conmon (openshift/microshift#697)
    e0 = "e0c85fe7644a858988d9687c2e0736a7d31922740d0f3e001c6b2e0aa7e5f528"
    w = classify(f"/system.slice/crio-conmon-{e0}.scope")
    assert w.container is None and w.service == f"crio-conmon-{e0}.scope"
    # cri-o cgroupfs (cri-o/cri-o#4075): crio-<id> and crio-conmon-<id>
    b9 = "b9e3a62d9ae9edc3f97e9167bdfdb6dd73960422cf343cc6188501b05d3f88c5"
    assert classify(f"/pod_123-456/crio-{b9}").container == b9
    assert classify(f"/pod_123-456/crio-conmon-{b9}").container is None


def test_hostile_names_are_cleaned() -> None:
    evil = "ev\x1b[2J\x1b]52;c;aGk=\x07il\u202e\u200b\x9b31m.service"
    w = classify(f"/system.slice/{evil}")
    assert w.service == "evil.service"
    for s in (w.service,):
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in s)
    # an id with an escape sequence around it is no container id
    assert classify(f"/system.slice/docker-{ID64}\x1b[0m.scope").container is None
    # a 4 KB path: the unit is found, and capped for display
    deep = "/".join(["a" * 200] * 20)
    long_unit = "x" * 300 + ".service"
    w = classify(f"/{deep}/{long_unit}/docker-{ID64}.scope")
    assert w.container == ID64
    assert w.service is not None and len(w.service) <= NAME_MAX_LEN
    # undecodable bytes (surrogateescape) vanish from the display name
    raw = os.fsdecode(b"bad\xff\xfe.service")
    assert classify(f"/{raw}").service == "bad.service"
    # a name that is nothing but control characters is no name
    assert classify("/\x1b[2J\x07.service").service == ".service"


def _tree(root: Path, rels: list[str]) -> dict[str, int]:
    out = {"/": root.stat().st_ino}
    for rel in rels:
        p = root / rel.lstrip("/")
        p.mkdir(parents=True)
        out[rel] = p.stat().st_ino
    return out


def test_paths_walk_rewalk_rate_limit_and_bound(tmp_path: Path) -> None:
    now = [100.0]
    evil = "evil\x1b[2J.service"
    ids = _tree(tmp_path, ["/system.slice", "/system.slice/nginx.service", f"/{evil}"])
    cg = CgroupPaths(str(tmp_path), max_entries=100, rewalk_interval=1.0, clock=lambda: now[0])
    info = cg.get(ids["/system.slice/nginx.service"])
    assert info is not None and info.path == "/system.slice/nginx.service"
    assert info.workload == Workload(service="nginx.service")
    assert cg.path(ids["/"]) == "/"
    assert cg.path(ids[f"/{evil}"]) == "/evil.service"  # cleaned for display
    assert cg.walks == 1 and cg.misses == 0
    # a cgroup made after the walk: within the interval a miss, no rewalk
    new = tmp_path / "system.slice" / f"docker-{ID64}.scope"
    new.mkdir()
    new_id = new.stat().st_ino
    now[0] += 0.5
    assert cg.get(new_id) is None
    assert cg.walks == 1 and cg.misses == 1
    assert cg.get(new_id) is None and cg.walks == 1 and cg.misses == 2
    # after the interval the miss rewalks and finds it
    now[0] += 0.6
    assert cg.workload(new_id) == Workload(container=ID64)
    assert cg.walks == 2 and cg.misses == 2
    # an id that is nowhere: one rewalk per interval, each lookup a miss
    now[0] += 5
    assert cg.get(999_999_999) is None
    assert cg.get(999_999_999) is None
    assert cg.walks == 3 and cg.misses == 4


def test_paths_bounded(tmp_path: Path) -> None:
    ids = _tree(tmp_path, [f"/d{i}" for i in range(10)])
    cg = CgroupPaths(str(tmp_path), max_entries=4)
    cg.walk()
    assert len(cg) == 4 and cg.evicted == 7  # 11 cgroups (root too), 4 kept
    # what was evicted is found again by a rewalk (the interval has passed)
    cg2 = CgroupPaths(str(tmp_path), max_entries=4, rewalk_interval=0.0)
    assert cg2.path(ids["/d3"]) == "/d3"
    assert len(cg2) <= 4


def test_paths_without_root_or_gone_root(tmp_path: Path) -> None:
    assert CgroupPaths(None).get(1) is None
    gone = CgroupPaths(str(tmp_path / "nope"))
    assert gone.get(1) is None and gone.misses == 1


def test_hostile_path_display_bounded(tmp_path: Path) -> None:
    # 4 KB deep: PATH_MAX allows it; the display path is capped
    rel = "/" + "/".join(["b" * 250] * 16)
    p = tmp_path / rel.lstrip("/")
    p.mkdir(parents=True)
    cg = CgroupPaths(str(tmp_path))
    shown = cg.path(p.stat().st_ino)
    assert shown is not None and len(shown) <= PATH_MAX_LEN and shown.endswith("…")
