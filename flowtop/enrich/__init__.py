"""Enrichment: ASN/geo from MaxMind databases, CIDR labels, local networks,
service names and reverse DNS. Nothing here imports Textual or Rich; every
string from outside is cleaned (`text.safe_text`) before it leaves.
"""

from __future__ import annotations

from flowtop.enrich.enricher import NOTHING, Enricher, EnrichOptions, Entity
from flowtop.enrich.services import service_name
from flowtop.enrich.text import safe_text

__all__ = ["NOTHING", "EnrichOptions", "Enricher", "Entity", "safe_text", "service_name"]
