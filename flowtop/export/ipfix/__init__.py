"""IPFIX (RFC 7011) export: Information Elements, templates, messages, exporter."""

from __future__ import annotations

from flowtop.export.ipfix.exporter import ExporterStats, IpfixExporter
from flowtop.export.ipfix.link import CollectorStats

__all__ = ["CollectorStats", "ExporterStats", "IpfixExporter"]
