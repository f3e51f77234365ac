"""The HTTP service and review web UI over a catalogue (FastAPI; see :func:`create_app`)."""

from __future__ import annotations

from wildreid.service.app import ServiceError, create_app

__all__ = ["ServiceError", "create_app"]
