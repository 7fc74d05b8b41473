"""The recurring schedule record of SPEC §2 (data only; cron maths is in ``cron.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Schedule:
    name: str
    cron: str
    topic: str
    timezone: str = "UTC"
    payload: Any = None
    # Job options for each fired job: priority, max_retries, retry_delay, backoff,
    # timeout, metadata (the names of enqueue's arguments).
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    last_fired_at: datetime | None = None
    next_run_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return v.isoformat() if v else None

        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "topic": self.topic,
            "payload": self.payload,
            "options": self.options,
            "enabled": self.enabled,
            "last_fired_at": iso(self.last_fired_at),
            "next_run_at": iso(self.next_run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }
