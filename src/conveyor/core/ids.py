"""Job ids: UUIDv7 strings, sortable by creation time and strictly increasing per process."""

from __future__ import annotations

import uuid6


def new_job_id() -> str:
    # uuid6.uuid7 keeps a monotonic counter for ids made in the same millisecond.
    return str(uuid6.uuid7())
