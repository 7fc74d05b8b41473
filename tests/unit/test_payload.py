"""Typed payloads: ``payload_as`` checks and converts fields; enqueue takes model instances;
a mismatch in a handler fails the job permanently."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal, NotRequired, TypedDict

import pydantic
import pytest

from conveyor import AsyncConveyor, InvalidPayload, Job, JobStatus, PermanentError, ValidationError
from conveyor.core.job import JobStatus as CoreStatus
from conveyor.settings import Settings

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Address:
    city: str
    zip: int


@dataclass
class Order:
    id: int
    placed_at: datetime
    address: Address
    items: list[Address] = field(default_factory=list)
    due: date | None = None
    colour: Colour = Colour.RED
    note: str | None = None
    kind: Literal["a", "b"] = "a"
    weight: float = 0.0


class Item(TypedDict):
    sku: str
    count: int
    at: NotRequired[datetime]  # a string here (future annotations): Python 3.11 counts it required


class Email(pydantic.BaseModel):
    to: str
    attempts: int = 0
    sent_at: datetime | None = None


def job(payload: Any) -> Job:
    return Job(
        id="j",
        topic="t",
        payload=payload,
        status=CoreStatus.PENDING,
        priority=0,
        run_at=NOW,
        attempts=0,
        max_retries=0,
        retry_delay=1.0,
        backoff="none",
        timeout=None,
        last_error=None,
        result=None,
        metadata={},
        unique_key=None,
        schedule=None,
        created_at=NOW,
        updated_at=NOW,
    )


GOOD = {
    "id": 7,
    "placed_at": "2026-01-02T03:04:05Z",
    "address": {"city": "Oslo", "zip": 150},
    "items": [{"city": "Bergen", "zip": 5003}],
    "due": "2026-02-01",
    "colour": "blue",
    "weight": 2,
}


def test_dataclass_fields_are_converted_nested_and_parsed() -> None:
    order = job(GOOD).payload_as(Order)
    assert order.placed_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert order.address == Address("Oslo", 150)
    assert order.items == [Address("Bergen", 5003)]
    assert order.due == date(2026, 2, 1)
    assert order.colour is Colour.BLUE
    assert order.weight == 2.0 and isinstance(order.weight, float)
    assert order.note is None and order.kind == "a"


@pytest.mark.parametrize(
    ("change", "field_name", "reason"),
    [
        ({"id": "x"}, "payload.id", "expected an integer"),
        ({"id": True}, "payload.id", "expected an integer"),
        ({"placed_at": "yesterday"}, "payload.placed_at", "invalid ISO 8601"),
        ({"placed_at": 5}, "payload.placed_at", "ISO 8601"),
        ({"address": {"city": "Oslo", "zip": "x"}}, "payload.address.zip", "expected an integer"),
        ({"address": {"city": "Oslo"}}, "payload.address.zip", "is required"),
        ({"items": [{"city": 1, "zip": 1}]}, "payload.items[0].city", "expected a string"),
        ({"items": "none"}, "payload.items", "expected an array"),
        ({"colour": "green"}, "payload.colour", "expected one of"),
        ({"kind": "c"}, "payload.kind", "expected one of"),
        ({"note": 5}, "payload.note", "expected a string"),
        ({"extra": 1}, "payload.extra", "unknown field"),
        ({"weight": "heavy"}, "payload.weight", "expected a number"),
    ],
)
def test_dataclass_mismatch_names_the_field(change: dict[str, Any], field_name: str, reason: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        job({**GOOD, **change}).payload_as(Order)
    assert info.value.field == field_name
    assert reason in info.value.reason and "Order" in info.value.reason


def test_missing_required_field_and_non_object_payload() -> None:
    with pytest.raises(InvalidPayload, match=r"payload\.placed_at: is required"):
        job({"id": 1, "address": {"city": "a", "zip": 1}}).payload_as(Order)
    with pytest.raises(InvalidPayload, match="expected an object for Order, got list"):
        job([1]).payload_as(Order)


def test_invalid_payload_is_a_validation_error_and_a_permanent_error() -> None:
    assert issubclass(InvalidPayload, ValidationError)
    assert issubclass(InvalidPayload, PermanentError)


def test_typeddict_checks_required_keys_and_converts_values() -> None:
    item = job({"sku": "a", "count": 2, "at": "2026-01-02T03:04:05+00:00"}).payload_as(Item)
    assert item == {"sku": "a", "count": 2, "at": NOW}
    with pytest.raises(InvalidPayload) as info:
        job({"sku": "a", "count": "two"}).payload_as(Item)
    assert info.value.field == "payload.count"
    with pytest.raises(InvalidPayload) as info:
        job({"count": 1}).payload_as(Item)
    assert info.value.field == "payload.sku"


def test_pydantic_mismatch_names_the_field() -> None:
    assert job({"to": "a@b.c", "sent_at": "2026-01-02T03:04:05Z"}).payload_as(Email).sent_at == NOW
    with pytest.raises(InvalidPayload) as info:
        job({"to": "a@b.c", "attempts": "many"}).payload_as(Email)
    assert info.value.field == "payload.attempts"


@pytest.fixture
async def app() -> AsyncIterator[AsyncConveyor]:
    client = AsyncConveyor(settings=Settings(url="memory://", poll_interval=0.05, retry_delay=0.01, retention=0))
    yield client
    await client.close()


async def test_enqueue_takes_pydantic_and_dataclass_instances(app: AsyncConveyor) -> None:
    sent = Email(to="a@b.c", sent_at=NOW)
    stored = await app.enqueue("email", sent)
    assert stored.payload == {"to": "a@b.c", "attempts": 0, "sent_at": "2026-01-02T03:04:05Z"}
    assert (await app.get(stored.id)).payload_as(Email) == sent

    order = Order(id=1, placed_at=NOW, address=Address("Oslo", 150))
    stored = await app.enqueue("order", order)
    assert (await app.get(stored.id)).payload_as(Order) == order

    many = await app.enqueue_many([{"topic": "email", "payload": sent}])
    assert many[0].payload["to"] == "a@b.c"
    updated = await app.update(many[0].id, payload=Email(to="x@y.z"))
    assert updated.payload == {"to": "x@y.z", "attempts": 0, "sent_at": None}


async def test_payload_mismatch_in_a_handler_fails_the_job_without_retry(app: AsyncConveyor) -> None:
    runs: list[int] = []

    @app.handler("order", max_retries=5, retry_delay=0)
    def handle(job: Job) -> None:
        runs.append(job.attempts)
        job.payload_as(Order)

    bad = await app.enqueue("order", {**GOOD, "id": "x"})
    await app.start()
    deadline = time.monotonic() + 5
    while (await app.get(bad.id)).status is not JobStatus.FAILED and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    failed = await app.get(bad.id)
    assert failed.status is JobStatus.FAILED
    assert runs == [1]
    assert "payload.id: expected an integer, got 'x'" in (failed.last_error or "")


async def test_a_schedule_takes_a_model_instance_as_its_payload(app: AsyncConveyor) -> None:
    stored = await app.schedule("hourly", "@hourly", "email", Email(to="a@b.c"))
    assert stored.payload == {"to": "a@b.c", "attempts": 0, "sent_at": None}
    job = await app.run_schedule("hourly")
    assert job.payload_as(Email) == Email(to="a@b.c")
