"""The TCP health verdict's thresholds: when a series is degraded.

Their own module, with nothing heavy imported, because config.py reads them
at start-up before the engine (and numpy) is loaded; core/tcphealth.py
applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

RTT_FACTOR = 2.0  # degraded when p50 >= factor x baseline ...
RTT_FLOOR_US = 5000  # ... and at least this much above it (LAN jitter is not a problem)
MIN_RTT_SAMPLES = 3
RETRANS_RATIO = 0.01  # degraded at 1% retransmitted segments ...
MIN_SEGMENTS = 50  # ... over at least this many data segments ...
MIN_RETRANS = 3  # ... and at least this many retransmits
MIN_RTO = 1  # degraded at this many RTOs in the window


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a series is degraded (config.py's [health] table and each
    [[monitor]]'s keys of the same names; validated there). The defaults
    are the constants above."""

    rtt_factor: float = RTT_FACTOR
    rtt_floor_us: float = RTT_FLOOR_US
    min_rtt_samples: int = MIN_RTT_SAMPLES
    retransmit_ratio: float = RETRANS_RATIO
    min_segments: int = MIN_SEGMENTS
    min_retransmits: int = MIN_RETRANS
    min_rto: int = MIN_RTO


DEFAULT_THRESHOLDS = Thresholds()
