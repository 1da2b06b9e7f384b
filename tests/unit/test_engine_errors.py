"""The engine survives what the kernel, the network and its own parts do.

A collector whose drains fail (injected here; tests/kernel/test_drain_errors.py
has a map that really fails): every failed interval is counted in drain_errors
and skipped, logged once per run of failures, and only a bounded run of them
ends the run, with one line. Sinks, observers, enrichment, the recorder, the
resolver and a scrape that fail are counted (<part>_errors), shown in the
header, dump's stats and Prometheus, and never stop the collection.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from flowtop.core.engine import MAX_DRAIN_FAILURES, Engine
from flowtop.core.flowtable import NS, FlowBatch, FlowTable
from flowtop.core.model import CollectorHealth
from flowtop.enrich import Enricher, EnrichOptions
from flowtop.errors import CollectorFailedError, KernelFeatureError
from flowtop.export.prometheus import FlowMetrics, FlowtopCollector
from flowtop.kernel.collector import Drain
from flowtop.query.source import TableSource
from flowtop.run.dump import FlowAccumulator, emit
from flowtop.run.record import Recorder, RecordingError, RecordingReader
from flowtop.stop import StopSignal
from tests.unit.runparts import T0, FakeCollector
from tests.unit.runparts import flow as udp_flow


def flow(sport: int, packets: int, now_ns: int = T0) -> tuple[np.ndarray, np.ndarray]:
    """One UDP flow 10.0.0.1:sport -> 192.0.2.1:53 on ifindex 2 with `packets` of 100 bytes."""
    return udp_flow("10.0.0.1", "192.0.2.1", sport, packets, direction=0, now_ns=now_ns)


class Scripted(FakeCollector):
    """A collector that plays a script: a Drain is handed out, an exception raised."""

    def __init__(self, script: list[Drain | BaseException]) -> None:
        super().__init__([], script)


def ok(i: int, sport: int, packets: int) -> Drain:
    return Drain([flow(sport, packets, T0 + i * NS)], T0 + i * NS, 1.0)


def engine_of(script: list[Drain | BaseException], **kw: object) -> tuple[Engine, FlowAccumulator]:
    table = FlowTable(clock_offset=0.0, idle_timeout=3600, active_timeout=3600)
    engine = Engine(Scripted(script), table, interval=0.05, **kw)  # type: ignore[arg-type]
    acc = FlowAccumulator(0.0)
    engine.sinks.append(acc)
    return engine, acc


def packets_of(acc: FlowAccumulator) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in acc.per_key().records():
        out[r.key.sport] = out.get(r.key.sport, 0) + r.packets
    return out


def warnings(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


def test_failed_drains_are_counted_skipped_and_logged_once_per_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad_fd = OSError(errno.EBADF, "Bad file descriptor")
    engine, acc = engine_of(
        [
            ok(1, 1000, 10),
            KernelFeatureError("reading the flow map failed: Bad file descriptor"),
            bad_fd,
            KernelFeatureError("reading the flow map failed: No such device"),
            ok(2, 2000, 5),
            KernelFeatureError("reading the flow map failed: again"),
            ok(3, 1000, 1),
        ]
    )
    caplog.set_level(logging.INFO, logger="flowtop.engine")
    for _ in range(7):
        engine.step()  # never raises
    assert engine.health().drain_errors == 4
    assert engine.health().problems == 4
    assert engine.stats.polls == 3  # the failed intervals were skipped, not merged
    engine.shutdown()
    assert packets_of(acc) == {1000: 11, 2000: 5}  # every packet of the drains that worked
    # one warning per run of failures (two runs), one line when it works again
    runs = warnings(caplog, "reading the kernel maps failed")
    assert len(runs) == 2, runs
    assert "Bad file descriptor" in runs[0] and "drain_errors" in runs[0]
    assert len(warnings(caplog, "works again after 3 failure(s)")) == 1
    assert len(warnings(caplog, "works again after 1 failure(s)")) == 1


def test_a_bounded_run_of_failures_ends_with_one_line() -> None:
    fail = KernelFeatureError("reading the flow map failed: Bad file descriptor")
    engine, _acc = engine_of([ok(1, 1000, 1), *[fail] * (MAX_DRAIN_FAILURES + 5)])
    engine.step()
    for _ in range(MAX_DRAIN_FAILURES - 1):
        engine.step()
    with pytest.raises(CollectorFailedError) as exc:
        engine.step()
    msg = str(exc.value)
    assert f"failed {MAX_DRAIN_FAILURES} intervals in a row, giving up" in msg
    assert "Bad file descriptor" in msg and "\n" not in msg
    assert exc.value.exit_code != 0
    assert engine.health().drain_errors == MAX_DRAIN_FAILURES


def test_run_gives_up_within_a_bound_even_without_duration() -> None:
    fail = OSError(errno.EBADF, "Bad file descriptor")
    engine, _acc = engine_of([fail] * (MAX_DRAIN_FAILURES + 5))
    stop = StopSignal()
    t0 = time.monotonic()
    with pytest.raises(CollectorFailedError):
        engine.run(stop)  # no duration: only the failures can end it
    assert time.monotonic() - t0 < MAX_DRAIN_FAILURES * engine.interval + 2


def test_a_tcp_sample_map_that_fails_leaves_the_flows_alone() -> None:
    part = ("reading the sock_ops samples", "reading the sock_ops connection map failed: EBADF")
    d = Drain([flow(1000, 7)], T0, 1.0, None, (part,))
    engine, acc = engine_of([d, ok(2, 1000, 3)])
    engine.step()
    engine.step()
    engine.shutdown()
    assert packets_of(acc) == {1000: 10}
    assert engine.health().drain_errors == 1


class Boom:
    def __init__(self) -> None:
        self.calls = 0

    def flows_ended(self, batch: FlowBatch) -> None:
        self.calls += 1
        raise RuntimeError("collector socket gone")

    def __call__(self, engine: Engine) -> None:
        self.calls += 1
        raise ValueError("bad metric")


def test_failing_sink_and_observer_are_counted_and_the_rest_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, acc = engine_of([ok(1, 1000, 2), ok(2, 2000, 3), ok(3, 3000, 4)])
    sink, observer = Boom(), Boom()
    engine.sinks.insert(0, sink)  # first: the accumulator after it must still get every batch
    engine.observers.append(observer)
    engine.table.set_timeouts(0.5, 3600)  # flows end as the clock moves on: batches to hand out
    for _ in range(3):
        engine.step()
    engine.shutdown()
    assert packets_of(acc) == {1000: 2, 2000: 3, 3000: 4}
    assert sink.calls >= 2 and observer.calls == 3
    h = engine.health()
    assert h.output_errors == sink.calls + observer.calls
    assert len(warnings(caplog, "an export (Boom) failed: collector socket gone")) == 1
    # shown where drain_errors is shown: dump's stats line, Prometheus
    metrics = FlowMetrics()
    metrics.publish({2: "eth1"}, [], 0, h, 0.0, 3)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FlowtopCollector(metrics))
    text = generate_latest(reg).decode()
    assert f'flowtop_errors_total{{subsystem="output"}} {float(h.output_errors)}' in text
    assert 'flowtop_errors_total{subsystem="drain"} 0.0' in text
    import io

    out = io.StringIO()
    emit(acc.per_key(), {2: "eth1"}, [], h, as_json=False, out=out)
    assert f"output_errors={h.output_errors}" in out.getvalue()


def test_a_failed_interval_is_not_counted_twice_by_the_exports() -> None:
    """Prometheus is updated after a failed drain too (its drain_errors moves),
    but from nothing: the interval before must not be added again."""
    import socket

    from flowtop.config import Config, PrometheusConfig
    from flowtop.run.outputs import Outputs

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    outputs = Outputs(Config(prometheus=PrometheusConfig(listen=("127.0.0.1", port))))
    try:
        fail = OSError(errno.EBADF, "Bad file descriptor")
        engine, _acc = engine_of([ok(1, 1000, 2), fail, ok(2, 2000, 3)])
        outputs.attach(engine)
        for _ in range(3):
            engine.step()
        import urllib.request

        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = body.decode()
        want = 'flowtop_flow_packets_total{direction="ingress",ifname="eth1",proto="udp"} 5.0'
        assert want in text, [ln for ln in text.splitlines() if "flow_packets" in ln]
        assert 'flowtop_errors_total{subsystem="drain"} 1.0' in text
    finally:
        outputs.close(0.2)


def test_a_scrape_that_fails_is_counted() -> None:
    metrics = FlowMetrics()
    errors: list[BaseException] = []
    metrics.on_error = errors.append
    metrics.publish({2: "eth1"}, [], 0, CollectorHealth(), 0.0, 1)
    metrics._snapshot = None  # type: ignore[assignment]  # a snapshot collect() cannot format
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FlowtopCollector(metrics))
    with pytest.raises(AttributeError):
        generate_latest(reg)
    assert len(errors) == 1


def test_enrichment_that_fails_is_counted_and_flows_still_end(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("office 10.0.0.0/8\n")
    enricher = Enricher(EnrichOptions(labels=str(labels), search_default_paths=False))
    calls = {"n": 0}
    real = enricher.lookup

    def broken(addrs: np.ndarray, versions: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:  # the first interval's lookup fails, later ones work
            raise MemoryError("cannot allocate the lookup buffer")
        return real(addrs, versions)

    enricher.lookup = broken  # type: ignore[method-assign]
    engine, acc = engine_of([ok(1, 1000, 2), ok(2, 1000, 3)], enricher=enricher)
    engine.step()
    assert engine.health().enrich_errors == 1
    engine.step()  # works again: the rows left unenriched are looked up now
    engine.shutdown()
    assert packets_of(acc) == {1000: 5}
    rec = next(acc.per_key().records())
    assert enricher.entity(rec.src_ent).label == "office"
    assert engine.health().enrich_errors == 1


def test_labels_refused_at_reload_count_as_enrichment_errors(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("office 10.0.0.0/8\n")
    enricher = Enricher(EnrichOptions(labels=str(labels), search_default_paths=False))
    engine, _acc = engine_of([ok(1, 1000, 2)], enricher=enricher)
    labels.write_text("office not-a-prefix\n")
    os.utime(labels, (time.time() + 5, time.time() + 5))
    engine.step()
    assert engine.health().enrich_errors == 1


def test_a_recording_that_cannot_be_written_stops_cleanly(tmp_path: Path) -> None:
    """A reader that goes away (EPIPE, a real write failure): the frame and every
    later one raise RecordingError and nothing more is written."""
    fifo = tmp_path / "rec"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    rec = Recorder(str(fifo), "host", 1.0, 0.0)
    head = os.read(reader, 1 << 16)
    os.close(reader)
    d = ok(1, 1000, 2)
    with pytest.raises(RecordingError, match=r"cannot write .*Broken pipe"):
        rec.frame(d, {2: "eth1"}, [], {})
    with pytest.raises(RecordingError, match="stopped: Broken pipe"):
        rec.frame(d, {2: "eth1"}, [], {})
    rec.close()
    # what made it out is a recording (the header), with no frame
    path = tmp_path / "copy"
    path.write_bytes(head)
    r = RecordingReader(str(path))
    assert r.host == "host" and list(r.frames()) == []
    r.close()


class StepSource(TableSource):
    def step(self) -> None:
        time.sleep(0.02)
        with self._lock:
            self.engine.step()
            self._after_step()

    def close(self) -> None:
        pass


class FailingNames:
    """The view's resolver, as far as the header is concerned: every lookup failed."""

    failures = 4

    def __init__(self, on_resolved: object) -> None:
        pass

    def name(self, addr: str) -> str | None:
        return None

    def close(self, timeout: float = 0.0) -> None:
        pass


@pytest.mark.asyncio
async def test_the_header_shows_errors_and_a_collector_that_gave_up_ends_the_view() -> None:
    from flowtop.tui import FlowtopApp
    from tests.tui.helpers import screen_text

    fail = KernelFeatureError("reading the flow map failed: Bad file descriptor")
    script: list[Drain | BaseException] = [ok(1, 1000, 2), fail, ok(2, 1000, 3)]
    script += [ok(3 + i, 1000, 1) for i in range(20)] + [fail] * MAX_DRAIN_FAILURES
    engine, _acc = engine_of(script)
    app = FlowtopApp(StepSource(engine, "router-1"), resolver=FailingNames)
    async with app.run_test(size=(120, 30)) as pilot:
        seen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and app.is_running:
            await pilot.pause(0.02)
            text = screen_text(pilot)
            if "drain_errors 1, resolve_errors" in text:
                seen = text  # the one failed drain before the run of them
        assert "collector  drain_errors 1, resolve_errors 4 " in seen, seen
    assert isinstance(app.failure, CollectorFailedError)
    assert app.return_code == CollectorFailedError.exit_code


def test_resolver_callback_and_lookup_failures_are_counted() -> None:
    from flowtop.enrich.dns import ReverseResolver
    from tests.unit.test_enrich_dns import PtrServer, Reply, wait_for

    server = PtrServer("127.0.0.1")
    server.set("192.0.2.1", Reply(labels=(b"one", b"example")))
    server.set("192.0.2.2", Reply(labels=(b"two", b"example")))
    server.set("192.0.2.3", Reply(silent=True))
    raised = threading.Event()

    def on_resolved() -> None:
        raised.set()
        raise RuntimeError("the view is gone")

    r = ReverseResolver(
        ["127.0.0.1"], port=server.port, timeout=0.3, workers=1, on_resolved=on_resolved
    )
    try:
        r.name("192.0.2.1")
        wait_for(lambda: r.name("192.0.2.1") == "one.example")
        assert raised.wait(2)
        r.name("192.0.2.2")  # the one worker is still there
        wait_for(lambda: r.name("192.0.2.2") == "two.example")
        assert r.stats()["errors"] == 2
        r.name("192.0.2.3")  # times out: a failed lookup
        wait_for(lambda: r.stats()["failed"] == 1)
        assert r.failures == 3
    finally:
        r.close(1.0)
        server.close()
