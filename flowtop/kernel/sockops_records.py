"""What the sock_ops program records per connection, and how it becomes TCP samples.

numpy mirrors of struct ft_conn, ft_closed_key and ft_closed_conn
(bpf/sockops.h; tests/kernel/test_sockops.py checks them against what bcc
compiled), the merge of the live and the closed map into one record per
connection, and the conversion to layout.TCP_SAMPLE.
"""

from __future__ import annotations

import numpy as np

from flowtop.kernel import layout

ORIGIN_SOCKOPS = 1
ORIGIN_TRACEPOINT = 2
TCP_CLOSE = 7

CONN = np.dtype(
    [
        ("sock_cookie", "<u8"),
        ("skaddr", "<u8"),
        ("netns_cookie", "<u8"),
        ("retrans", "<u8"),
        ("data_segs", "<u8"),
        ("bytes_acked", "<u8"),
        ("bytes_received", "<u8"),
        ("tp_retrans", "<u8"),
        ("first_ns", "<u8"),
        ("last_ns", "<u8"),
        ("srtt_us", "<u4"),
        ("rttvar_us", "<u4"),
        ("min_rtt_us", "<u4"),
        ("rtt_samples", "<u4"),
        ("rto", "<u4"),
        ("state", "u1"),
        ("server", "u1"),
        ("origin", "u1"),
        ("pad", "u1"),
    ]
)
CLOSED_KEY = np.dtype([("sock_id", "<u8"), ("close_ns", "<u8")])
# struct ft_closed_conn; also what read_records() returns for every connection.
CONN_RECORD = np.dtype([("key", layout.FLOW_KEY), ("conn", CONN)])

_IDENT = np.dtype([("id", "<u8"), ("key", layout.FLOW_KEY)])

assert CONN.itemsize == 104
assert CONN_RECORD.itemsize == 152


def _sock_id(r: np.ndarray) -> np.ndarray:
    c = r["conn"]
    out: np.ndarray = np.where(c["sock_cookie"] != 0, c["sock_cookie"], c["skaddr"])
    return out


def _ident(r: np.ndarray) -> np.ndarray:
    """Socket and 5-tuple as one comparable void value per record."""
    out = np.empty(len(r), dtype=_IDENT)
    out["id"] = _sock_id(r)
    out["key"] = r["key"]
    return out.view(f"V{_IDENT.itemsize}")


def merge_records(live: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """One CONN_RECORD per connection (socket and 5-tuple: a socket can be
    disconnected and connect again): the closed copy wins over a live one
    read just before the socket closed; a connection the batch read met twice
    (an entry moved while the map was walked) keeps its last copy.

    Both cases are rare: they are looked for on the 8-byte socket ids first,
    and only records sharing one are compared whole.
    """
    # Row selection and concatenation on raw bytes: numpy copies nested
    # structured records field by field, ten times slower.
    raw = f"V{CONN_RECORD.itemsize}"
    live = np.ascontiguousarray(live, dtype=CONN_RECORD)
    closed = np.ascontiguousarray(closed, dtype=CONN_RECORD)
    if len(live):
        ids = np.sort(_sock_id(live))
        if (ids[1:] == ids[:-1]).any():
            ident = _ident(live)
            _, first_rev = np.unique(ident[::-1], return_index=True)
            live = live.view(raw)[np.sort(len(ident) - 1 - first_rev)].view(CONN_RECORD)
        if len(closed):
            maybe = np.flatnonzero(np.isin(_sock_id(live), _sock_id(closed)))
            if len(maybe):
                keep = np.ones(len(live), dtype=bool)
                keep[maybe[np.isin(_ident(live[maybe]), _ident(closed))]] = False
                live = live.view(raw)[keep].view(CONN_RECORD)
    if not len(closed):
        return live
    out: np.ndarray = np.concatenate([live.view(raw), closed.view(raw)]).view(CONN_RECORD)
    return out


def to_tcp_samples(records: np.ndarray) -> np.ndarray:
    """CONN_RECORDs as layout.TCP_SAMPLE, oriented local -> remote.

    rtt_samples counts the kernel's RTT callbacks, one per round trip (it
    grows when srtt took fresh samples); rto counts timeouts of the socket.
    """
    c = records["conn"]
    out = np.zeros(len(records), dtype=layout.TCP_SAMPLE)
    out["key"] = records["key"]
    for name in ("srtt_us", "rttvar_us", "min_rtt_us", "rtt_samples", "data_segs", "rto"):
        out[name] = c[name]
    # total_retrans when sock_ops saw the socket; else the tracepoint's events.
    out["retrans"] = np.where(c["origin"] == ORIGIN_TRACEPOINT, c["tp_retrans"], c["retrans"])
    out["source"] = layout.TCP_SOURCE_SOCKOPS
    out["server"] = c["server"]
    out["state"] = c["state"]
    out["last_ns"] = c["last_ns"]
    return out


def live_records(keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """The live map's (FLOW_KEY, CONN) pairs as CONN_RECORDs (a copy)."""
    ks = layout.FLOW_KEY.itemsize
    raw = np.empty((len(keys), CONN_RECORD.itemsize), dtype=np.uint8)
    raw[:, :ks] = keys.view(np.uint8).reshape(len(keys), ks)
    raw[:, ks:] = vals.view(np.uint8).reshape(len(vals), CONN.itemsize)
    out: np.ndarray = raw.view(CONN_RECORD).reshape(len(keys))
    return out
