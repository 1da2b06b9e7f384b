"""Run (flowtop.run.lifecycle) starts the parts of a run in one order and closes
them in the reverse order, each once, on every path: a normal end, a signal,
a part that fails to start, a part that fails to close, a SIGHUP reload; and
every mode (dump, export-only, the live view, replay) goes through it.

The parts are the real ones (enricher on the vendored MaxMind test databases,
outputs, recorder, ReplaySource) except the kernel collector and reverse DNS
(tests/unit/runparts.py). An open database is a memfd mapped into this
process (/proc/self/maps): "closed" is checked there, not only by flags.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowtop.config import CollectorConfig, Config, EnrichConfig
from flowtop.errors import FlowtopError, Interrupted
from flowtop.kernel.collector import Drain
from flowtop.run.lifecycle import Run
from flowtop.run.record import Recorder
from flowtop.stop import StopSignal
from tests.unit.runparts import (
    ASN_DB,
    BREDBAND,
    CITY_DB,
    NS,
    T0,
    TELSTRA,
    LoggingParts,
    flow,
    mmdb_copies,
    wait_until,
)

# The recorder and outputs after the attachment: nothing it needs (issue 13).
START = ["start enricher", "start collector", "attach", "start recorder", "start outputs"]
CLOSE = [
    "close resolver",
    "close outputs",
    "close recorder",
    "close collector",
    "close enricher",
]


@pytest.fixture
def handlers() -> Iterator[None]:
    """The signal handlers the modes install are put back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def cfg_with(enrich: EnrichConfig | None = None, interval: float = 0.05) -> Config:
    return Config(
        collector=CollectorConfig(interfaces=("eth1",), interval=interval),
        enrich=enrich or EnrichConfig(geoip_asn=str(ASN_DB)),
    )


def drains(n: int, dst: str = TELSTRA) -> list[Drain]:
    return [
        Drain([flow("10.0.0.1", dst, 1000, 3, now_ns=T0 + i * NS)], T0 + i * NS, 1.0)
        for i in range(n)
    ]


def test_parts_start_in_order_and_close_in_reverse_each_once(tmp_path: Path) -> None:
    before = mmdb_copies()
    parts = LoggingParts()
    run = Run(cfg_with(), outputs=True, record=str(tmp_path / "rec"), parts=parts).start()
    assert parts.events == START
    assert len(mmdb_copies() - before) == 1  # the ASN database is open
    assert run.names == ["eth1"]
    run.resolver()
    run.shutdown()
    run.close()
    run.close()  # a second close does nothing
    assert parts.events == [*START, "start resolver", "detach", *CLOSE]
    assert all(p.close_calls == 1 for made in parts.made.values() for p in made)
    assert mmdb_copies() - before == set()
    assert (tmp_path / "rec").read_bytes().startswith(b"FLOWTOP-REC")


@pytest.mark.parametrize(
    ("failing", "closed"),
    [
        ("enricher", []),
        ("collector", ["close enricher"]),
        ("attach", ["close collector", "close enricher"]),
        ("recorder", ["close collector", "close enricher"]),
        ("outputs", ["close recorder", "close collector", "close enricher"]),
    ],
)
def test_a_part_that_fails_to_start_closes_the_ones_before(
    tmp_path: Path, failing: str, closed: list[str]
) -> None:
    before = mmdb_copies()
    parts = LoggingParts(fail=failing)
    run = Run(cfg_with(), outputs=True, record=str(tmp_path / "rec"), parts=parts)
    with pytest.raises(FlowtopError) as exc, run:
        pytest.fail("the body must not run")
    assert "refused by the test" in str(exc.value)
    started = START[: [e.split()[-1] for e in START].index(failing) + 1]
    assert parts.events == [*started, *closed]
    assert mmdb_copies() - before == set()


def test_sigint_during_start_up_closes_what_started(handlers: None) -> None:
    """A real SIGINT while the collector starts: the StopSignal flag, raised as
    Interrupted at the collector's next check; the enricher (started before)
    is closed, nothing after it is started (the outputs come after the attachment)."""
    before = mmdb_copies()
    stop = StopSignal()
    stop.install()

    def collector_starting(checkpoint: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        checkpoint()  # what KernelCollector does between compile and attach

    parts = LoggingParts(on_collector=collector_starting)
    with pytest.raises(Interrupted) as exc:
        Run(cfg_with(), stop, outputs=True, parts=parts).start()
    assert exc.value.exit_code == 130
    assert parts.events == [
        "start enricher",
        "start collector",
        "close enricher",
    ]
    assert mmdb_copies() - before == set()


def test_a_close_that_fails_still_closes_the_others_and_is_reported_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    before = mmdb_copies()
    parts = LoggingParts(fail_close=("collector", "outputs"))
    run = Run(cfg_with(), outputs=True, record=str(tmp_path / "rec"), parts=parts).start()
    with pytest.raises(RuntimeError, match="outputs would not close"):
        run.close()  # the first failure is raised, after every part was closed
    assert parts.closes() == CLOSE[1:]
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert lines == ["closing the collector failed: collector would not close"]
    assert mmdb_copies() - before == set()


def test_close_failures_on_the_way_out_of_an_error_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts = LoggingParts(fail_close=("collector", "enricher"))
    with (
        pytest.raises(ValueError, match="the mode failed"),
        Run(cfg_with(), outputs=True, parts=parts),
    ):
        raise ValueError("the mode failed")
    assert parts.closes() == ["close outputs", "close collector", "close enricher"]
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert lines == [
        "closing the collector failed: collector would not close",
        "closing the enrichment failed: enricher would not close",
    ]


# -- the modes ------------------------------------------------------------------------------


def test_dump_closes_the_enricher_and_prints_what_it_enriched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowtop.run import commands

    # emit's default stream is the sys.stdout of when flowtop.run.dump was imported
    out = io.StringIO()
    real_emit = commands.emit
    monkeypatch.setattr(commands, "emit", lambda *a, **kw: real_emit(*a, out=out, **kw))
    before = mmdb_copies()
    open_during: list[int] = []
    parts = LoggingParts(
        script=drains(3), on_drain=lambda: open_during.append(len(mmdb_copies() - before))
    )
    assert commands.run_dump(cfg_with(), 0.3, as_json=True, stop=StopSignal(), parts=parts) == 0
    recs = [json.loads(ln) for ln in out.getvalue().splitlines()]
    ours = [r for r in recs if r.get("type") == "flow" and r["dst"] == TELSTRA]
    assert sum(r["packets"] for r in ours) == 9 and {r["dst_asn"] for r in ours} == {1221}
    assert open_during and set(open_during) == {1}  # the database, open while it collected
    assert parts.events == [
        "start enricher",
        "start collector",
        "attach",
        "detach",
        "close collector",
        "close enricher",
    ]
    assert mmdb_copies() - before == set()


def _copy(src: Path, dst: Path) -> str:
    shutil.copyfile(src, dst)
    return str(dst)


def test_export_only_sighup_closes_each_replaced_enricher_once(
    tmp_path: Path, handlers: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Real signals: SIGHUP twice with a different ASN database file each
    time, once more with a labels file that does not parse, then SIGTERM.
    After each reload exactly one copy of each database is mapped, new ones;
    the failed reload keeps them; at the end none is."""
    from flowtop.run.service import run_export_only

    caplog.set_level(logging.INFO)
    before = mmdb_copies()
    bad = tmp_path / "labels"
    bad.write_text("office not-a-prefix\n")
    # Both databases named in each: none is searched for in the default places.
    city = str(CITY_DB)
    copy = _copy(ASN_DB, tmp_path / "asn-copy.mmdb")
    configs = [
        cfg_with(EnrichConfig(geoip_asn=copy, geoip_city=city)),
        cfg_with(EnrichConfig(geoip_asn=str(ASN_DB), geoip_city=city)),
        cfg_with(EnrichConfig(geoip_asn=str(ASN_DB), geoip_city=city, labels=str(bad))),
    ]
    parts = LoggingParts(script=drains(400))
    stop = StopSignal()
    stop.install()
    seen: list[set[int]] = []
    problems: list[str] = []

    def enrichers() -> list[Any]:
        return parts.made.get("enricher", [])

    def driver() -> None:
        try:
            wait_until(lambda: "attach" in parts.events)
            seen.append(mmdb_copies() - before)
            for n in (2, 3):
                os.kill(os.getpid(), signal.SIGHUP)
                wait_until(lambda n=n: len(enrichers()) == n and enrichers()[n - 2].close_calls)
                seen.append(mmdb_copies() - before)
            os.kill(os.getpid(), signal.SIGHUP)
            wait_until(lambda: "keeping the previous enrichment" in caplog.text)
            seen.append(mmdb_copies() - before)
        except AssertionError as exc:
            problems.append(f"{exc}: {parts.events}")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=driver)
    t.start()
    try:
        start = cfg_with(EnrichConfig(geoip_asn=str(ASN_DB), geoip_city=city))
        rc = run_export_only(start, reload=lambda: configs.pop(0), stop=stop, parts=parts)
    finally:
        t.join(30)
        stop.restore()
    assert not problems, problems
    assert rc == 0
    assert [len(s) for s in seen] == [2, 2, 2, 2], seen
    first, second, third, kept = seen
    assert not first & second and not third & (first | second) and kept == third
    assert [e.close_calls for e in enrichers()] == [1, 1, 1]
    assert mmdb_copies() - before == set()
    text = caplog.text
    assert text.count("config reloaded") == 3
    assert text.count("keeping the previous enrichment") == 1
    assert parts.events[-4:] == ["detach", "close outputs", "close collector", "close enricher"]
    assert [o.close_calls for o in parts.made["outputs"]] == [1]


def test_live_view_closes_every_part_after_the_view_ends(
    monkeypatch: pytest.MonkeyPatch, handlers: None, tmp_path: Path
) -> None:
    """run_live with the Textual loop replaced by three steps and a name
    lookup: the resolver the view asks for is the Run's, closed first; the
    enricher last; the recording holds the frames."""
    from flowtop.run.commands import run_live
    from flowtop.run.record import RecordingReader
    from flowtop.tui.app import FlowtopApp

    before = mmdb_copies()
    parts = LoggingParts(script=drains(3))
    shown: list[int] = []

    def view(app: FlowtopApp) -> None:
        from flowtop.query.types import ViewQuery

        for _ in range(3):
            app.source.step()
        shown.append(len(mmdb_copies() - before))
        app.names(TELSTRA)
        snap = app.source.snapshot(ViewQuery())
        shown.append(sum(r.packets for r in snap.rows))
        parts.events.append("view ended")

    monkeypatch.setattr(FlowtopApp, "run", view)
    rec = tmp_path / "rec"
    rc = run_live(
        cfg_with(interval=0.05),
        theme=None,
        resolve=True,
        record=str(rec),
        stop=StopSignal(),
        parts=parts,
    )
    assert rc == 0
    assert shown == [1, 9]
    assert parts.events == [
        "start enricher",
        "start collector",
        "attach",
        "start recorder",
        "start resolver",
        "view ended",
        "detach",
        "close resolver",
        "close recorder",
        "close collector",
        "close enricher",
    ]
    assert parts.made["resolver"][0].asked == [TELSTRA]
    assert mmdb_copies() - before == set()
    reader = RecordingReader(str(rec))
    try:
        frames = list(reader.frames())
    finally:
        reader.close()
    assert sum(int(s["packets"].sum()) for f in frames for _k, s in f.drain.batches) == 9


def test_replay_goes_through_a_run_that_closes_the_recording(
    monkeypatch: pytest.MonkeyPatch, handlers: None, tmp_path: Path
) -> None:
    from flowtop.run.commands import run_live
    from flowtop.tui.app import FlowtopApp

    path = tmp_path / "rec"
    rec = Recorder(str(path), "router-1", 1.0, 0.0)
    for d in drains(2, dst=BREDBAND):
        rec.frame(d, {2: "eth1"}, [], {})
    rec.close()
    parts = LoggingParts()
    seen: list[int] = []

    def view(app: FlowtopApp) -> None:
        from flowtop.query.types import ViewQuery

        while app.source.advance():  # type: ignore[attr-defined]
            pass
        seen.append(sum(r.packets for r in app.source.snapshot(ViewQuery()).rows))

    monkeypatch.setattr(FlowtopApp, "run", view)
    rc = run_live(
        Config(), theme=None, resolve=False, replay=str(path), stop=StopSignal(), parts=parts
    )
    assert rc == 0 and seen == [6]
    assert parts.events == ["start replay", "close replay"]
    assert parts.made["replay"][0].reader._f.closed
