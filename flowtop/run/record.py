"""`--record FILE` / `--replay FILE`: the engine's input, kept and played back.

A recording holds what the collector handed the engine each interval: the
drained (key, stats) batches as raw bytes, the interface counters and the
collector's loss counters. Replaying feeds the same engine the same input, so
every view (any filter, grouping or sort) is available afterwards, without
root. Only flows active in an interval are written, compressed with zlib.

Layout: MAGIC, a u32-length-prefixed JSON header, then frames, each a
u32-length-prefixed zlib blob of: u32 JSON length, JSON frame header, then
for each batch its keys and stats records (layout.FLOW_KEY / FLOW_STATS).
A frame cut short (the recorder was killed) ends the replay cleanly.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.errors import FlowtopError
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.query.source import TableSource

MAGIC = b"FLOWTOP-REC\x01"
_U32 = struct.Struct("<I")
VERSION = 1
MAX_FRAME = 512 * 1024 * 1024


class RecordingError(FlowtopError):
    """A file that is not a flowtop recording, or is damaged."""

    exit_code = 2


class Recorder:
    """Appends one frame per engine step; flushed after every frame.

    A write that fails (a full disk) ends the recording there: that frame
    and every later one raise RecordingError (the caller counts them as not
    recorded) and nothing more is written, so the file ends with whole
    frames or one cut short, which replay takes as the end."""

    def __init__(self, path: str, host: str, interval: float, clock_offset: float) -> None:
        try:
            self._f: BinaryIO = open(path, "wb")  # noqa: SIM115  (closed in close())
        except OSError as exc:
            raise RecordingError(f"cannot write {path}: {exc.strerror}") from None
        header = {
            "version": VERSION,
            "host": host,
            "interval": interval,
            "clock_offset": clock_offset,
            "created": time.time(),
        }
        self.path = path
        self.failed: str | None = None  # why the recording stopped
        try:
            self._write(MAGIC + _blob(json.dumps(header).encode()))
        except RecordingError:
            self.close()
            raise

    def _write(self, data: bytes) -> None:
        if self.failed is not None:
            raise RecordingError(f"recording to {self.path} stopped: {self.failed}")
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as exc:
            self.failed = exc.strerror or str(exc)
            raise RecordingError(f"cannot write {self.path}: {self.failed}") from None

    def frame(
        self,
        drain: Drain,
        names: dict[int, str],
        ifaces: list[InterfaceCounters],
        kernel: dict[str, int],
    ) -> None:
        head = {
            "now_ns": drain.now_ns,
            "interval": drain.interval,
            "names": {str(k): v for k, v in names.items()},
            "ifaces": [
                [c.ifindex, c.name, c.family, c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes]
                for c in ifaces
            ],
            "kernel": kernel,
            "batches": [len(k) for k, _ in drain.batches],
            "tcp": 0 if drain.tcp is None else len(drain.tcp),
        }
        parts = [_blob(json.dumps(head).encode())]
        for keys, stats in drain.batches:
            parts.append(np.ascontiguousarray(keys).tobytes())
            parts.append(np.ascontiguousarray(stats).tobytes())
        if drain.tcp is not None:
            parts.append(np.ascontiguousarray(drain.tcp, dtype=layout.TCP_SAMPLE).tobytes())
        self._write(_blob(zlib.compress(b"".join(parts), 1)))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the flush of a failed recording: counted
            self._f.close()


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


@dataclass(frozen=True, slots=True)
class Frame:
    drain: Drain
    names: dict[int, str]
    ifaces: list[InterfaceCounters]
    kernel: dict[str, int]


class RecordingReader:
    def __init__(self, path: str) -> None:
        try:
            self._f: BinaryIO = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise RecordingError(f"cannot read {path}: {exc.strerror}") from None
        self.path = path
        if self._f.read(len(MAGIC)) != MAGIC:
            self._f.close()
            raise RecordingError(f"{path} is not a flowtop recording")
        raw = self._read_blob()
        try:
            self.header: dict[str, Any] = json.loads(raw or b"")
            self.interval = float(self.header["interval"])
            self.clock_offset = float(self.header["clock_offset"])
            self.host = str(self.header.get("host", "replay"))
        except (ValueError, KeyError, TypeError):
            self._f.close()
            raise RecordingError(f"{path}: damaged header") from None

    def _read_blob(self) -> bytes | None:
        size = self._f.read(4)
        if len(size) < 4:
            return None
        (n,) = _U32.unpack(size)
        if n > MAX_FRAME:
            raise RecordingError(f"{self.path}: damaged frame length {n}")
        data = self._f.read(n)
        return data if len(data) == n else None

    def frames(self) -> Iterator[Frame]:
        while True:
            blob = self._read_blob()
            if blob is None:
                return
            try:
                yield _decode(zlib.decompress(blob))
            except (zlib.error, ValueError, KeyError, TypeError, struct.error):
                raise RecordingError(f"{self.path}: damaged frame") from None

    def close(self) -> None:
        self._f.close()


def _decode(payload: bytes) -> Frame:
    (n,) = _U32.unpack_from(payload, 0)
    head = json.loads(payload[4 : 4 + n])
    pos = 4 + n
    batches = []
    ks, vs = layout.FLOW_KEY.itemsize, layout.FLOW_STATS.itemsize
    for count in head["batches"]:
        keys = np.frombuffer(payload, dtype=layout.FLOW_KEY, count=count, offset=pos).copy()
        pos += count * ks
        stats = np.frombuffer(payload, dtype=layout.FLOW_STATS, count=count, offset=pos).copy()
        pos += count * vs
        batches.append((keys, stats))
    ntcp = int(head.get("tcp", 0))  # recordings made before TCP health have none
    tcp = np.frombuffer(payload, dtype=layout.TCP_SAMPLE, count=ntcp, offset=pos).copy()
    ifaces = [
        InterfaceCounters(int(i), str(name), str(fam), int(rp), int(rb), int(tp), int(tb))
        for i, name, fam, rp, rb, tp, tb in head["ifaces"]
    ]
    return Frame(
        drain=Drain(batches, int(head["now_ns"]), float(head["interval"]), tcp if ntcp else None),
        names={int(k): str(v) for k, v in head["names"].items()},
        ifaces=ifaces,
        kernel={str(k): int(v) for k, v in head["kernel"].items()},
    )


class ReplayCollector:
    """Plays the role of KernelCollector from a recording's frames."""

    def __init__(self, reader: RecordingReader) -> None:
        self._reader = reader
        self._frames = reader.frames()
        self.current: Frame | None = None
        self.ended = False
        self._names: dict[int, str] = {}

    def start(self) -> list[str]:
        return self.interfaces()

    def drain(self) -> Drain:
        frame = next(self._frames, None) if not self.ended else None
        if frame is None:
            self.ended = True
            now = self.current.drain.now_ns if self.current else 0
            return Drain([], now, 0.0)
        self.current = frame
        self._names.update(frame.names)
        return frame.drain

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        time.sleep(timeout)

    def names(self) -> dict[int, str]:
        return dict(self._names)

    def interfaces(self) -> list[str]:
        return [self._names[i] for i in sorted(self._names)]

    def interface_counters(self) -> list[InterfaceCounters]:
        return list(self.current.ifaces) if self.current else []

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        kernel = dict(self.current.kernel) if self.current else {}
        return CollectorHealth(kernel=kernel, forced_evictions=forced_evictions)

    def stop_capture(self) -> None:
        pass

    def close(self) -> None:
        self._reader.close()


class ReplaySource(TableSource):
    """A ViewSource that plays a recording back at `speed` times real time."""

    def __init__(self, path: str, speed: float = 1.0) -> None:
        if not speed > 0:
            raise RecordingError(f"--speed must be positive, not {speed}")
        self.reader = RecordingReader(path)
        self.collector = ReplayCollector(self.reader)
        table = FlowTable(clock_offset=self.reader.clock_offset)
        super().__init__(Engine(self.collector, table, self.reader.interval), self.reader.host)
        self.speed = speed
        self._closed = threading.Event()

    def now(self) -> float:
        cur = self.collector.current
        if cur is None:
            return self.reader.clock_offset
        return cur.drain.now_ns / 1e9 + self.reader.clock_offset

    @property
    def ended(self) -> bool:
        return self.collector.ended

    def step(self) -> None:
        if self._closed.wait(self.interval / self.speed) or self.collector.ended:
            return
        with self._lock:
            self.engine.step()
            if not self.collector.ended:
                self._after_step()

    def advance(self) -> bool:
        """One frame without waiting (tests, screenshots); False at the end."""
        with self._lock:
            self.engine.step()
            if self.collector.ended:
                return False
            self._after_step()
            return True

    def stop(self) -> None:
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self.collector.close()
