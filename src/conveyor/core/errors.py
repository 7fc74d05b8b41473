"""The ConveyorError hierarchy. Pure: imports nothing outside ``conveyor.core``.

::

    ConveyorError
    ├── ConfigurationError          bad settings, URL or environment value
    ├── ValidationError             bad input to the API (names the field)
    │   ├── PayloadTooLarge
    │   └── InvalidPayload          payload_as(Model) mismatch (core.payload; also a PermanentError)
    ├── JobError
    │   ├── JobNotFound
    │   ├── DuplicateJob
    │   └── InvalidState            transition not allowed from the current state
    ├── ScheduleNotFound
    ├── ScheduleExists              a different schedule of that name exists (insert-only)
    ├── BackendError
    │   ├── BackendUnavailable
    │   └── MigrationRequired
    └── MissingDependencyError      optional extra not installed

Handler control flow (not failures) lives in ``conveyor.core.signals``.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """A conveyor error."""

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            doc = type(self).__doc__ or type(self).__name__
            message = doc.strip().splitlines()[0]
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ConveyorError):
    """Invalid configuration."""

    def __init__(self, message: str | None = None, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class ValidationError(ConveyorError):
    """Invalid input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PayloadTooLarge(ValidationError):
    """Payload too large."""

    def __init__(self, size: int, limit: int, field: str = "payload") -> None:
        super().__init__(field, f"encoded size {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class JobError(ConveyorError):
    """A job operation failed."""

    def __init__(self, message: str | None = None, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(JobError):
    """Job not found."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found", job_id=job_id)


class DuplicateJob(JobError):
    """A job with this id already exists, or one batch gives the id twice."""

    def __init__(self, job_id: str, *, twice: bool = False) -> None:
        why = "is given twice in one batch" if twice else "already exists"
        super().__init__(f"a job with id {job_id} {why}", job_id=job_id)


class InvalidState(JobError):
    """The job's state does not allow this operation."""

    def __init__(self, job_id: str, status: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id}: it is {status}", job_id=job_id)
        self.status = status
        self.action = action


class ScheduleNotFound(ConveyorError):
    """Schedule not found."""

    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name!r} not found")
        self.name = name


class ScheduleExists(ConveyorError):
    """A different schedule of this name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name!r} exists with another definition")
        self.name = name


class BackendError(ConveyorError):
    """The storage backend failed."""


class BackendUnavailable(BackendError):
    """The storage backend is unreachable."""


class MigrationRequired(BackendError):
    """The store's schema is older than this version of conveyor; run `conveyor migrate`."""


class MissingDependencyError(ConveyorError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; install it with: pip install 'conveyor[{extra}]'")
        self.package = package
        self.extra = extra
