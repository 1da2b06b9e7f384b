"""The Host header of a plain HTTP/1.x request's first bytes."""

from __future__ import annotations

import re
from enum import Enum

from flowtop.wirenames.hostname import from_bytes

# The request methods a first segment must start with to be read as HTTP.
_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
            b"CONNECT ", b"TRACE ")  # fmt: skip
MAX_HEAD = 8192  # request head bytes looked at (the Host line is near the top)
_HOST = re.compile(rb"\r?\nhost:[ \t]*([^\r\n]*)", re.IGNORECASE)
_PORT = re.compile(rb"(?::\d{1,5})$")


class Request(Enum):
    NEED_MORE = "need_more"  # a request head so far, no Host line yet
    NOT_HTTP = "not_http"
    NO_HOST = "no_host"  # a whole head without Host (HTTP/1.0)


def looks_like_http(data: bytes) -> bool:
    return data.startswith(_METHODS)


def host(data: bytes) -> str | Request:
    """The cleaned Host of the request at the start of data (port dropped),
    or why none."""
    if not looks_like_http(data):
        return Request.NOT_HTTP
    head = data[:MAX_HEAD]
    stop = head.find(b"\r\n\r\n")
    if stop >= 0:
        head = head[:stop]
    m = _HOST.search(head)
    if m is None:
        return Request.NO_HOST if stop >= 0 or len(data) >= MAX_HEAD else Request.NEED_MORE
    if m.end() == len(head) and stop < 0:
        return Request.NEED_MORE  # the line may go on in the next segment
    value = m.group(1).strip()
    if value.startswith(b"["):  # [v6]:port
        value = value[1 : value.find(b"]")] if b"]" in value else value[1:]
    else:
        value = _PORT.sub(b"", value)
    got = from_bytes(value)
    return got if got is not None else Request.NO_HOST
