"""The HTTP + WebSocket API (SPEC §4): ``create_app(client, settings)``."""

from __future__ import annotations

from conveyor.api.app import create_app

__all__ = ["create_app"]
