"""Property test: random sequences of claims, manual operations (one at a time and in
``apply_many`` batches) and attempt outcomes, run on every backend and on a model made of ``conveyor.core.lifecycle.apply`` over a
dict, must give identical results at every step and identical jobs at the end.

Each example runs on a fresh topic, unique key and job ids inside one store per backend
(opened per example, closed after), so examples never see each other's jobs. Times come
from a fake clock that only moves forward.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.backends import open_backend
from conveyor.backends.base import Backend
from conveyor.core import lifecycle, operation
from conveyor.core.errors import ConveyorError, InvalidState, JobNotFound
from conveyor.core.job import ACTIVE, Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import KEEP, JobOp
from conveyor.core.options import JobDefaults, build_job

T0 = datetime(2031, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
WORKERS = ("w1", "w2")
_examples = itertools.count()

# One step of a sequence: (kind, arguments). Job indexes are taken modulo the jobs
# enqueued so far; claim snapshots modulo the claims made so far (stale ones included).
_job_ix = st.integers(0, 5)
# JSON numbers a store can encode (orjson: 64-bit); the client refuses others before a store sees them.
_json_int = st.integers(-(2**63), 2**63 - 1)
_op = st.one_of(
    st.tuples(st.just("cancel"), _job_ix),
    st.tuples(st.just("request_cancel"), _job_ix),
    st.tuples(st.just("requeue"), _job_ix),
    st.tuples(
        st.just("update"),
        _job_ix,
        st.fixed_dictionaries(
            {},
            optional={
                "priority": st.integers(-5, 5),
                "max_retries": st.integers(0, 3),
                "payload": st.one_of(st.none(), _json_int, st.dictionaries(st.sampled_from("ab"), _json_int)),
                "metadata": st.dictionaries(st.sampled_from("mn"), _json_int, max_size=2),
                "delay_ms": st.integers(-1000, 5000),
            },
        ),
    ),
    st.tuples(st.just("complete"), _job_ix, st.one_of(st.none(), _json_int, st.lists(_json_int, max_size=2))),
    st.tuples(st.just("fail"), _job_ix, st.sampled_from(["by hand", "manual\nfailure"])),
    st.tuples(st.just("delete"), _job_ix),
)
_outcome_kind = st.sampled_from(["completed", "failed", "permanent", "snoozed", "released", "cancelled", "lost"])
_enqueue = st.tuples(st.just("enqueue"), st.booleans(), st.integers(-2, 2), st.integers(0, 2), st.integers(0, 2))
_step = st.one_of(
    _enqueue,
    st.tuples(st.just("claim"), st.sampled_from(WORKERS), st.integers(1, 3)),
    st.tuples(st.just("finish"), st.lists(st.tuples(st.integers(0, 7), _outcome_kind), min_size=1, max_size=3)),
    st.tuples(st.just("op"), _op),
    st.tuples(st.just("many"), st.lists(_op, min_size=1, max_size=5)),
    st.tuples(st.just("wait"), st.integers(1, 90_000)),
)


@dataclass
class Model:
    """The reference: ``lifecycle.apply`` over a dict, plus the claim and unique-key
    rules the storage contract states (``backends/base.py``)."""

    jobs: dict[str, Job] = field(default_factory=dict)

    def holder(self, key: str) -> Job | None:
        return next((j for j in self.jobs.values() if j.unique_key == key and j.status in ACTIVE), None)

    def enqueue(self, job: Job) -> Job:
        held = self.holder(job.unique_key) if job.unique_key is not None else None
        if held is not None:
            return held
        self.jobs[job.id] = job
        return job

    def claim(self, worker: str, topic: str, limit: int, now: datetime) -> list[Job]:
        due = sorted(
            (j for j in self.jobs.values() if j.topic == topic and j.status is JobStatus.PENDING and j.run_at <= now),
            key=lambda j: (-j.priority, j.run_at, j.id),
        )[:limit]
        out = []
        for job in due:
            new = job.copy()
            new.status, new.attempts = JobStatus.PROCESSING, job.attempts + 1
            new.locked_by, new.locked_until, new.started_at, new.updated_at = worker, now + LEASE, now, now
            self.jobs[job.id] = new
            out.append(new)
        return out

    def apply(self, op: JobOp, now: datetime) -> Job | str:
        job = self.jobs.get(op.job_id)
        if job is None:
            return "not found"
        new = lifecycle.apply(job, op, now)
        if new is None:
            return "invalid state"
        if op.remove:
            del self.jobs[op.job_id]
            return new
        if lifecycle.reactivates(job, new) and self.holder(new.unique_key or "") is not None:
            return "invalid state"
        self.jobs[new.id] = new
        return new

    def finish(self, outcomes: list[Outcome], now: datetime) -> list[Job | None]:
        out: list[Job | None] = []
        for o in outcomes:
            job = self.jobs.get(o.job_id)
            new = None if job is None else lifecycle.apply(job, o, now)
            if new is not None:
                self.jobs[new.id] = new
            out.append(new)
        return out


def _outcome(kind: str, job: Job, now: datetime) -> Outcome:
    worker = job.locked_by or ""
    if kind == "completed":
        return lifecycle.completed(job, worker, {"attempt": job.attempts})
    if kind == "failed":
        return lifecycle.failed(job, worker, f"boom {job.attempts}\nTraceback ...", now)
    if kind == "permanent":
        return lifecycle.failed(job, worker, "fatal", now, permanent=True)
    if kind == "snoozed":
        return lifecycle.snoozed(job, worker, 2.5, now)
    if kind == "released":
        return lifecycle.released(job, worker, now)
    if kind == "cancelled":
        return lifecycle.cancelled(job, worker)
    return lifecycle.worker_lost(job, now)


def _op_for(step: tuple[Any, ...], job_id: str, now: datetime) -> JobOp:
    kind = step[0]
    if kind == "cancel":
        return operation.cancel(job_id)
    if kind == "request_cancel":
        return operation.request_cancel(job_id)
    if kind == "requeue":
        return operation.requeue(job_id, now)
    if kind == "update":
        changes = dict(step[2])
        delay = changes.pop("delay_ms", None)
        return operation.update(
            job_id,
            run_at=None if delay is None else now + timedelta(milliseconds=delay),
            payload=changes.get("payload", KEEP),
            priority=changes.get("priority"),
            max_retries=changes.get("max_retries"),
            metadata=changes.get("metadata"),
        )
    if kind == "complete":
        return operation.complete(job_id, step[2])
    if kind == "delete":
        return operation.delete(job_id)
    return operation.fail(job_id, step[2])


def _said(result: Job | ConveyorError) -> Job | str:
    """A result as the model states it."""
    if isinstance(result, JobNotFound):
        return "not found"
    if isinstance(result, InvalidState):
        return "invalid state"
    assert isinstance(result, Job), result
    return result


async def _run(url: str, steps: list[tuple[Any, ...]]) -> None:
    n = next(_examples)
    topic, key = f"prop{n}", f"key{n}"
    backend: Backend = open_backend(url)
    await backend.connect()
    model = Model()
    ids: list[str] = []
    claims: list[Job] = []
    now = T0 + timedelta(days=n)
    try:
        for step in steps:
            now += timedelta(milliseconds=1)
            kind = step[0]
            if kind == "enqueue":
                _, unique, priority, max_retries, max_snoozes = step
                job = build_job(
                    topic,
                    {"n": len(ids)},
                    now=now,
                    defaults=JobDefaults(),
                    priority=priority,
                    max_retries=max_retries,
                    max_snoozes=max_snoozes,
                    retry_delay=1,
                    backoff="constant",
                    unique_key=key if unique else None,
                )
                [stored] = await backend.enqueue([job])
                assert stored == model.enqueue(job), step
                if stored.id == job.id:
                    ids.append(job.id)
            elif kind == "claim":
                got = await backend.claim(
                    worker_id=step[1], topics=[topic], limit=step[2], now=now, locked_until=now + LEASE
                )
                assert got == model.claim(step[1], topic, step[2], now), step
                claims += got
            elif kind == "finish" and claims:
                # Mostly the latest claims (whose fence may hold), sometimes older ones.
                outcomes = [_outcome(k, claims[-1 - i % len(claims)], now) for i, k in step[1]]
                assert await backend.finish(outcomes, now=now) == model.finish(outcomes, now), step
            elif kind == "op" and ids:
                op = _op_for(step[1], ids[step[1][1] % len(ids)], now)
                expected = model.apply(op, now)
                try:
                    got_job: Job | str = await backend.apply(op, now=now)
                except (JobNotFound, InvalidState) as exc:
                    got_job = _said(exc)
                assert got_job == expected, step
            elif kind == "many" and ids:
                ops = [_op_for(s, ids[s[1] % len(ids)], now) for s in step[1]]
                expected_many = [model.apply(op, now) for op in ops]
                assert [_said(r) for r in await backend.apply_many(ops, now=now)] == expected_many, step
            elif kind == "wait":
                now += timedelta(milliseconds=step[1])
        for job_id in ids:
            assert await backend.get(job_id) == model.jobs.get(job_id), job_id
    finally:
        await backend.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(
    first=st.lists(_enqueue, min_size=1, max_size=4),
    steps=st.lists(_step, min_size=1, max_size=40),
)
def test_every_backend_applies_the_lifecycle_exactly_as_the_pure_rules(
    backend_url: str, first: list[Any], steps: list[Any]
) -> None:
    # Every sequence starts with jobs to work on and a claim, so outcomes can hold a fence.
    try:
        asyncio.run(_run(backend_url, [*first, ("claim", "w1", 2), *steps]))
    except ConveyorError as exc:  # pragma: no cover - a failure shows the store's error
        raise AssertionError(f"the store raised {exc!r}") from exc
