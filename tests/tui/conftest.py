"""TUI tests: a fixed time zone and no cursor blink, so screens are reproducible."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fixed_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    time.tzset()
    yield
    time.tzset()


def no_dns(addr: str) -> str | None:
    """A resolver lookup that knows a few names and never touches the network."""
    known = {"192.0.2.1": "web.example.net", "192.0.2.2": "db.example.net"}
    return known.get(addr)
