"""Job events of SPEC §4, as published to other processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.core import codec

EVENT_TYPES = frozenset(
    {"job.scheduled", "job.started", "job.completed", "job.failed", "job.retrying", "job.cancelled", "job.deleted"}
)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    job_id: str
    topic: str
    status: str
    timestamp: datetime
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "job_id": self.job_id,
            "topic": self.topic,
            "status": self.status,
            "timestamp": self.timestamp.isoformat(),
            "data": self.data,
            "metadata": self.metadata,
        }

    def encode(self) -> bytes:
        return codec.dumps(self.to_dict())

    @classmethod
    def decode(cls, raw: bytes | str) -> Event:
        return cls.from_dict(codec.loads(raw))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            type=d["type"],
            job_id=d["job_id"],
            topic=d["topic"],
            status=d["status"],
            timestamp=datetime.fromisoformat(d["timestamp"]),
            data=d.get("data") or {},
            metadata=d.get("metadata") or {},
        )
