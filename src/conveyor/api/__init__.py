"""The HTTP + WebSocket API (docs/api.md): ``create_app(client, settings)``."""

from __future__ import annotations

from conveyor.api.app import create_app

__all__ = ["create_app"]
