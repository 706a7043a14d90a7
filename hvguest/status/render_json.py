"""The status document as JSON (docs/status-json.md): all of it, or one service."""

from __future__ import annotations

import json
from typing import Any, TextIO

from hvguest.status.document import ServiceEntry, StatusDocument

# Exit status of ``hvguestctl status SERVICE`` by the service's health.
SERVICE_EXIT = {"error": 1, "degraded": 2}


def header(doc: StatusDocument) -> dict[str, Any]:
    """Everything but the services."""
    return {k: v for k, v in doc.items() if k not in ("services",)}


def one_service(doc: StatusDocument, service: str) -> dict[str, Any]:
    """The document's header with only ``service``'s entry."""
    return {**header(doc), "services": {service: doc["services"][service]}}


def service_exit(entry: ServiceEntry) -> int:
    return SERVICE_EXIT.get(entry["health"], 0)


def dump(doc: StatusDocument | dict[str, Any], out: TextIO) -> None:
    json.dump(doc, out, indent=2)
    out.write("\n")
