"""conveyor: a persistent job queue for Python. The public API, re-exported."""

from __future__ import annotations

from conveyor.client import AsyncConveyor
from conveyor.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    ConveyorError,
    DuplicateJob,
    InvalidState,
    JobError,
    JobNotFound,
    MigrationRequired,
    MissingDependencyError,
    PayloadTooLarge,
    ScheduleNotFound,
    ValidationError,
)
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.page import JobPage
from conveyor.core.payload import InvalidPayload
from conveyor.core.schedule import Schedule
from conveyor.core.signals import JobTimeout, PermanentError, Snooze
from conveyor.settings import Settings
from conveyor.sync import Conveyor

__version__ = "0.1.0"

__all__ = [
    "AsyncConveyor",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "Conveyor",
    "ConveyorError",
    "DuplicateJob",
    "Event",
    "InvalidPayload",
    "InvalidState",
    "Job",
    "JobError",
    "JobNotFound",
    "JobPage",
    "JobStatus",
    "JobTimeout",
    "MigrationRequired",
    "MissingDependencyError",
    "PayloadTooLarge",
    "PermanentError",
    "Schedule",
    "ScheduleNotFound",
    "Settings",
    "Snooze",
    "ValidationError",
    "__version__",
]

# --- schedules helpers (maintained by the schedules module) ---
from conveyor.core.cron import Cron, daily, every, monthly, weekly

__all__ += ["Cron", "daily", "every", "monthly", "weekly"]
# --- end of schedules helpers ---
