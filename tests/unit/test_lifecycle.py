"""The lifecycle rules of ``conveyor.core.lifecycle.apply`` on fixed times (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.core import lifecycle, operation
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import ERRORS_KEPT, Outcome, apply

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)
W = "worker-1"


def _job(status: JobStatus = JobStatus.PENDING, **fields: object) -> Job:
    job = Job(
        id="j1",
        topic="t",
        payload={"a": 1},
        status=status,
        priority=0,
        run_at=T0,
        attempts=0,
        max_retries=3,
        retry_delay=60.0,
        backoff="constant",
        timeout=None,
        last_error=None,
        result=None,
        metadata={},
        unique_key=None,
        schedule=None,
        created_at=T0,
        updated_at=T0,
    )
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def _running(**fields: object) -> Job:
    values: dict[str, object] = {
        "attempts": 1,
        "locked_by": W,
        "locked_until": T0 + timedelta(minutes=5),
        "started_at": T0,
    }
    values.update(fields)
    return _job(JobStatus.PROCESSING, **values)


@pytest.mark.parametrize(
    ("op", "status", "refused"),
    [
        (operation.cancel("j1"), JobStatus.PENDING, False),
        (operation.cancel("j1"), JobStatus.PROCESSING, True),
        (operation.cancel("j1"), JobStatus.CANCELLED, True),
        (operation.request_cancel("j1"), JobStatus.PROCESSING, False),
        (operation.request_cancel("j1"), JobStatus.PENDING, True),
        (operation.requeue("j1", NOW), JobStatus.FAILED, False),
        (operation.requeue("j1", NOW), JobStatus.CANCELLED, False),
        (operation.requeue("j1", NOW), JobStatus.COMPLETED, True),
        (operation.requeue("j1", NOW), JobStatus.PENDING, True),
        (operation.update("j1", priority=5), JobStatus.PENDING, False),
        (operation.update("j1", priority=5), JobStatus.PROCESSING, True),
        (operation.complete("j1", 1), JobStatus.PROCESSING, False),
        (operation.complete("j1", 1), JobStatus.FAILED, True),
        (operation.fail("j1", "x"), JobStatus.PENDING, False),
        (operation.fail("j1", "x"), JobStatus.COMPLETED, True),
    ],
)
def test_apply_refuses_an_operation_outside_its_allowed_states(
    op: operation.JobOp, status: JobStatus, refused: bool
) -> None:
    assert (apply(_job(status), op, NOW) is None) is refused


def test_apply_leaves_the_given_job_alone() -> None:
    job = _job()
    apply(job, operation.cancel("j1"), NOW)
    assert job.status is JobStatus.PENDING and job.updated_at == T0


def test_cancel_finishes_a_pending_job() -> None:
    new = apply(_job(), operation.cancel("j1"), NOW)
    assert new is not None
    assert (new.status, new.finished_at, new.updated_at) == (JobStatus.CANCELLED, NOW, NOW)


def test_request_cancel_keeps_the_job_running_under_its_lease() -> None:
    new = apply(_running(), operation.request_cancel("j1"), NOW)
    assert new is not None
    assert new.status is JobStatus.PROCESSING and new.cancel_requested
    assert new.locked_by == W and new.finished_at is None


def test_requeue_starts_afresh_but_keeps_the_error_history() -> None:
    history = [{"attempt": 1, "at": T0.isoformat(), "worker": W, "error": "boom"}]
    failed = _job(
        JobStatus.FAILED,
        attempts=4,
        snoozes=2,
        started_at=T0,
        finished_at=T0,
        last_error="boom",
        errors=history,
        cancel_requested=True,
    )
    new = apply(failed, operation.requeue("j1", NOW), NOW)
    assert new is not None
    assert (new.status, new.attempts, new.snoozes, new.run_at) == (JobStatus.PENDING, 0, 0, NOW)
    assert new.started_at is None and new.finished_at is None and new.result is None
    assert not new.cancel_requested
    assert new.last_error == "boom" and new.errors == history


def test_update_changes_only_what_it_names() -> None:
    new = apply(_job(), operation.update("j1", payload=None, metadata={"m": 1}), NOW)
    assert new is not None
    assert new.payload is None and new.metadata == {"m": 1}
    assert (new.priority, new.max_retries, new.run_at) == (0, 3, T0)
    kept = apply(_job(), operation.update("j1", priority=3), NOW)
    assert kept is not None and kept.payload == {"a": 1} and kept.priority == 3


def test_manual_complete_stores_the_result_and_clears_the_lease() -> None:
    new = apply(_running(), operation.complete("j1", {"ok": True}), NOW)
    assert new is not None
    assert (new.status, new.result, new.finished_at) == (JobStatus.COMPLETED, {"ok": True}, NOW)
    assert new.locked_by is None and new.locked_until is None


def test_manual_fail_sets_the_error_without_an_attempt_entry() -> None:
    new = apply(_job(), operation.fail("j1", "by hand"), NOW)
    assert new is not None
    assert (new.status, new.last_error, new.errors) == (JobStatus.FAILED, "by hand", [])


def test_an_outcome_needs_the_fence() -> None:
    job = _running()
    assert apply(job, lifecycle.completed(job, "someone-else", 1), NOW) is None
    assert apply(job, Outcome("j1", W, 2, JobStatus.COMPLETED), NOW) is None
    assert apply(_job(), lifecycle.completed(job, W, 1), NOW) is None


def test_a_failed_attempt_is_recorded_in_errors_and_retried() -> None:
    job = _running(retry_delay=10.0)
    new = apply(job, lifecycle.failed(job, W, "boom\nTraceback", NOW), NOW)
    assert new is not None
    assert (new.status, new.run_at, new.attempts) == (JobStatus.PENDING, NOW + timedelta(seconds=10), 1)
    assert new.errors == [{"attempt": 1, "at": NOW.isoformat(), "worker": W, "error": "boom\nTraceback"}]
    assert new.last_error == "boom\nTraceback" and new.finished_at is None and new.locked_by is None


def test_errors_keep_the_newest_entries_only() -> None:
    old = [{"attempt": i, "at": T0.isoformat(), "worker": W, "error": f"e{i}"} for i in range(1, ERRORS_KEPT + 1)]
    job = _running(attempts=ERRORS_KEPT + 1, max_retries=100, errors=old)
    new = apply(job, lifecycle.failed(job, W, "last", NOW), NOW)
    assert new is not None
    assert len(new.errors) == ERRORS_KEPT
    assert new.errors[0]["attempt"] == 2 and new.errors[-1] == {
        "attempt": ERRORS_KEPT + 1,
        "at": NOW.isoformat(),
        "worker": W,
        "error": "last",
    }


def test_a_retry_of_a_job_whose_cancellation_was_requested_ends_cancelled() -> None:
    job = _running(cancel_requested=True)
    new = apply(job, lifecycle.failed(job, W, "boom", NOW), NOW)
    assert new is not None
    assert (new.status, new.finished_at, new.cancel_requested) == (JobStatus.CANCELLED, NOW, True)
    assert len(new.errors) == 1


def test_the_result_is_stored_only_when_completed() -> None:
    job = _running(result="earlier")
    done = apply(job, lifecycle.completed(job, W, {"r": 1}), NOW)
    assert done is not None and done.result == {"r": 1}
    retried = apply(job, lifecycle.failed(job, W, "x", NOW), NOW)
    assert retried is not None and retried.result == "earlier"


def test_last_error_is_kept_by_an_outcome_without_one() -> None:
    job = _running(last_error="earlier")
    done = apply(job, lifecycle.completed(job, W, None), NOW)
    assert done is not None and done.last_error == "earlier"


def test_a_snooze_refunds_the_attempt_and_counts() -> None:
    job = _running(snoozes=4)
    new = apply(job, lifecycle.snoozed(job, W, 30, NOW), NOW)
    assert new is not None
    assert (new.status, new.attempts, new.snoozes) == (JobStatus.PENDING, 0, 5)
    assert new.run_at == NOW + timedelta(seconds=30) and new.errors == []


def test_snoozing_past_max_snoozes_fails_the_job_saying_so() -> None:
    job = _running(snoozes=3, max_snoozes=3)
    outcome = lifecycle.snoozed(job, W, 30, NOW)
    new = apply(job, outcome, NOW)
    assert new is not None
    assert new.status is JobStatus.FAILED and new.snoozes == 3
    assert new.last_error is not None and "max_snoozes (3)" in new.last_error
    assert new.errors[-1]["error"] == new.last_error


def test_a_released_job_is_given_back_uncounted_and_unrecorded() -> None:
    job = _running()
    new = apply(job, lifecycle.released(job, W, NOW), NOW)
    assert new is not None
    assert (new.status, new.attempts, new.snoozes, new.errors) == (JobStatus.PENDING, 0, 0, [])


def test_a_lost_worker_counts_as_a_failed_attempt_of_that_worker() -> None:
    job = _running(max_retries=0)
    new = apply(job, lifecycle.worker_lost(job, NOW), NOW)
    assert new is not None
    assert new.status is JobStatus.FAILED
    assert new.errors == [{"attempt": 1, "at": NOW.isoformat(), "worker": W, "error": lifecycle.WORKER_LOST}]


def test_reactivates_only_a_finished_job_with_a_unique_key() -> None:
    done = _job(JobStatus.FAILED, unique_key="k")
    again = apply(done, operation.requeue("j1", NOW), NOW)
    assert again is not None and lifecycle.reactivates(done, again)
    plain = _job(JobStatus.FAILED)
    plain_again = apply(plain, operation.requeue("j1", NOW), NOW)
    assert plain_again is not None and not lifecycle.reactivates(plain, plain_again)


def test_an_error_text_no_store_holds_is_made_storable_once_for_every_store() -> None:
    job = _running(max_retries=0)
    new = apply(job, lifecycle.failed(job, W, "a\x00b \ud800 c", NOW), NOW)
    assert new is not None and new.last_error == new.errors[0]["error"] == "a\\u0000b \ufffd c"
    assert operation.fail("j1", "x\udcff\x00").last_error == "x\ufffd\\u0000"
    assert lifecycle.failed(job, W, "plain", NOW).last_error == "plain"
