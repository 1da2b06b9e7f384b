"""The listener's counters: one place for their names (no dependencies).

Each is a key of CollectorHealth.kernel when the source is a ListenCollector.
LOSSES are problems (core/model.PROBLEM_COUNTERS adds them): received
records flowtop could not count, or records the exporter sent that never
arrived. INFO are counts shown in `dump` stats lines but not problems.
"""

from __future__ import annotations

RECORDS = "listen_records"  # data records decoded into flows
MESSAGES = "listen_messages"  # export messages (datagrams / TCP messages) decoded
RECORDS_LOST = "listen_records_lost"  # sequence gaps (IPFIX records, v9 packets, v5 flows)
TEMPLATES_MISSING = "listen_templates_missing"  # data sets whose template was not known
DECODE_ERRORS = "listen_decode_errors"  # malformed messages (dropped whole)
QUEUE_FULL = "listen_queue_full"  # datagrams the reader dropped: the queue was full
EXPORTERS_EVICTED = "listen_exporters_evicted"  # exporter state dropped for room
IFINDEX_EXHAUSTED = "listen_ifindex_exhausted"  # records put on the shared overflow ifindex
TEMPLATES_DROPPED = "listen_templates_dropped"  # templates refused: an exporter's cap
RECORDS_SAMPLED = "listen_records_sampled"  # records scaled by a sampling interval (estimates)
RECORDS_UNKEYED = "listen_records_unkeyed"  # data records without IP addresses (not flows)
OPTIONS_RECORDS = "listen_options_records"  # options data records read
IF_SAMPLES = "listen_interface_samples"  # interface counter records read (sFlow)

LOSSES = (
    RECORDS_LOST,
    TEMPLATES_MISSING,
    DECODE_ERRORS,
    QUEUE_FULL,
    EXPORTERS_EVICTED,
    IFINDEX_EXHAUSTED,
    TEMPLATES_DROPPED,
)
INFO = (RECORDS, MESSAGES, RECORDS_SAMPLED, RECORDS_UNKEYED, OPTIONS_RECORDS, IF_SAMPLES)
ALL = (*INFO, *LOSSES)
