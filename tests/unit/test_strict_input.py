"""Bad input is a ValidationError naming the field, never silently changed data or a
raw OverflowError: strict JSON (NaN/Infinity), size limits on results and metadata,
NUL in text fields, enqueue_many's id/schedule keys, datetimes and durations that
overflow, bounded duration settings, and a worker whose loop dies."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor import AsyncConveyor, Conveyor, Job
from conveyor.core import codec
from conveyor.core.cron import next_fire
from conveyor.core.errors import ConfigurationError, ConveyorError, PayloadTooLarge, ValidationError
from conveyor.core.options import MAX_ERROR_LENGTH, bound_error_text, validate_result
from conveyor.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NON_FINITE = [math.nan, math.inf, -math.inf, float("1e400")]


@pytest.fixture
def app() -> Iterator[Conveyor]:
    with Conveyor("memory://") as client:
        yield client


@pytest.mark.parametrize("value", NON_FINITE)
def test_codec_refuses_non_finite_floats_naming_the_path(value: float) -> None:
    with pytest.raises(ValidationError) as err:
        codec.encode_checked({"a": [1, {"b": value}]}, field="payload")
    assert err.value.field == "payload.a[1].b"


def test_codec_refuses_non_finite_floats_inside_dataclasses() -> None:
    @dataclass
    class Point:
        x: float

    with pytest.raises(ValidationError, match="NaN"):
        codec.encode_checked([Point(math.nan)], field="result")


def test_codec_keeps_real_nulls() -> None:
    assert codec.encode_checked({"a": None, "b": 1.5}, field="payload") == b'{"a":null,"b":1.5}'


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'{"a": NaN}'])
def test_codec_loads_refuses_non_json_numbers(text: bytes) -> None:
    with pytest.raises(ValueError):
        codec.loads(text)


@pytest.mark.parametrize("text", [b"[18446744073709551616]", b'{"a": -9223372036854775809}', "[" + "9" * 300 + "]"])
def test_codec_loads_input_refuses_integers_outside_64_bits(text: bytes | str) -> None:
    # orjson alone reads them as floats: 2**64 would come back as 1.8446744073709552e+19.
    assert isinstance(codec.loads(text), list | dict)
    with pytest.raises(ValueError, match="outside the 64-bit range"):
        codec.loads_input(text)


def test_codec_loads_input_keeps_every_64_bit_integer_and_long_digit_strings() -> None:
    text = b'{"n": [18446744073709551615, -9223372036854775808], "s": "123456789012345678901234"}'
    value = codec.loads_input(text)
    assert value == {"n": [2**64 - 1, -(2**63)], "s": "123456789012345678901234"}
    assert codec.loads_input(b"[1e19, 12345]") == [1e19, 12345]


def test_a_payload_nested_past_the_encoders_limit_names_the_limit(app: Conveyor) -> None:
    deep: Any = 1
    for _ in range(codec.MAX_DEPTH):
        deep = [deep]
    assert codec.encode_checked(deep, field="payload")
    with pytest.raises(ValidationError, match=f"nested deeper than {codec.MAX_DEPTH} levels") as err:
        app.enqueue("t", [deep])
    assert err.value.field == "payload"


@pytest.mark.parametrize("value", NON_FINITE)
def test_enqueue_refuses_non_finite_payload_and_metadata(app: Conveyor, value: float) -> None:
    with pytest.raises(ValidationError) as err:
        app.enqueue("t", {"x": value})
    assert err.value.field == "payload.x"
    with pytest.raises(ValidationError) as err:
        app.enqueue("t", {}, metadata={"m": value})
    assert err.value.field == "metadata.m"
    assert app.list().total == 0


@pytest.mark.parametrize("value", NON_FINITE)
def test_update_and_complete_refuse_non_finite_values(app: Conveyor, value: float) -> None:
    job = app.enqueue("t", {"x": 1})
    with pytest.raises(ValidationError, match="payload"):
        app.update(job.id, payload=[value])
    with pytest.raises(ValidationError, match="metadata"):
        app.update(job.id, metadata={"v": value})
    with pytest.raises(ValidationError) as err:
        app.complete(job.id, {"r": value})
    assert err.value.field == "result.r"
    stored = app.get(job.id)
    assert stored.status == "pending" and stored.payload == {"x": 1} and stored.metadata == {}


def test_metadata_and_results_have_the_payload_limit() -> None:
    with Conveyor(settings=Settings(url="memory://", max_payload_size=1000)) as app:
        with pytest.raises(PayloadTooLarge) as err:
            app.enqueue("t", {}, metadata={"m": "x" * 2000})
        assert err.value.field == "metadata"
        job = app.enqueue("t", {})
        with pytest.raises(PayloadTooLarge) as err:
            app.complete(job.id, "x" * 2000)
        assert err.value.field == "result"
    with pytest.raises(PayloadTooLarge):
        validate_result(["y" * 100], max_size=50)


def test_error_texts_are_bounded_keeping_head_and_tail(app: Conveyor) -> None:
    text = "HEAD" + "x" * (3 * MAX_ERROR_LENGTH) + "TAIL"
    bounded = bound_error_text(text)
    assert len(bounded) < MAX_ERROR_LENGTH + 100
    assert bounded.startswith("HEAD") and bounded.endswith("TAIL")
    job = app.enqueue("t", {})
    assert len(app.fail(job.id, text).last_error or "") < MAX_ERROR_LENGTH + 100


def test_unique_key_with_nul_is_refused(app: Conveyor) -> None:
    with pytest.raises(ValidationError) as err:
        app.enqueue("t", {}, unique_key="a\x00b")
    assert err.value.field == "unique_key"
    assert "NUL" in str(err.value)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"topic": "t", "id": "x" * 300}, "jobs[0].id"),
        ({"topic": "t", "id": 42}, "jobs[0].id"),
        ({"topic": "t", "id": "a/b"}, "jobs[0].id"),
        ({"topic": "t", "id": ""}, "jobs[0].id"),
        ({"topic": "t", "schedule": 7}, "jobs[0].schedule"),
        ({"topic": "t", "schedule": "has space"}, "jobs[0].schedule"),
    ],
)
def test_enqueue_many_validates_id_and_schedule(app: Conveyor, item: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        app.enqueue_many([item])
    assert err.value.field == field
    assert app.list().total == 0


def test_enqueue_many_accepts_a_valid_id_and_schedule(app: Conveyor) -> None:
    (job,) = app.enqueue_many([{"topic": "t", "id": "my-job.1", "schedule": "nightly"}])
    assert job.id == "my-job.1" and job.schedule == "nightly"


@pytest.mark.parametrize("run_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_run_at_past_the_datetime_range_is_a_validation_error(app: Conveyor, run_at: str) -> None:
    with pytest.raises(ValidationError) as err:
        app.enqueue("t", {}, run_at=run_at)
    assert err.value.field == "run_at"
    job = app.enqueue("t", {})
    with pytest.raises(ValidationError) as err:
        app.update(job.id, run_at=run_at)
    assert err.value.field == "run_at"


@pytest.mark.parametrize("delay", ["99999999999999d", 1e300, "99999999999999999999999999s"])
def test_huge_delays_are_validation_errors(app: Conveyor, delay: object) -> None:
    with pytest.raises(ValidationError) as err:
        app.enqueue("t", {}, delay=delay)
    assert err.value.field == "delay"


@pytest.mark.parametrize("cron", ["@every 99999999999999d", "@every 1000000w", "@every 3651d"])
def test_huge_every_periods_are_validation_errors(app: Conveyor, cron: str) -> None:
    with pytest.raises(ValidationError) as err:
        app.schedule("s", cron=cron, topic="t")
    assert err.value.field == "cron"


def test_every_ten_years_is_still_accepted() -> None:
    fire = next_fire("@every 3650d", "UTC", NOW)
    assert fire is not None and fire > NOW


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONVEYOR_LOCK_DURATION", "99999999999999d"),
        ("CONVEYOR_POLL_INTERVAL", "99999999999999d"),
        ("CONVEYOR_RETENTION", "99999999999999d"),
        ("CONVEYOR_POLL_INTERVAL", "2h"),
        ("CONVEYOR_LOCK_DURATION", "8d"),
    ],
)
def test_duration_settings_are_bounded_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: value})


async def test_a_worker_whose_claim_loop_dies_logs_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    app = AsyncConveyor(settings=Settings(url="memory://", poll_interval=0.05))

    @app.handler("t")
    def handle(job: Job) -> None:
        return None

    await app.start()
    worker = app.worker

    async def broken() -> None:
        raise OverflowError("date value out of range")

    # The claim loop dies as an overflow in its date arithmetic would make it.
    claim = next(t for t in worker._tasks if t.get_name() == "conveyor-claim")
    claim.cancel()
    worker._tasks.remove(claim)
    task = asyncio.get_running_loop().create_task(broken(), name="conveyor-claim")
    task.add_done_callback(worker._loop_ended)
    worker._tasks.append(task)
    with pytest.raises(ConveyorError, match="loops died"):
        await asyncio.wait_for(worker.wait_stopped(), 10)
    assert any("loop died" in r.getMessage() and r.levelname == "CRITICAL" for r in caplog.records)
    assert worker.id not in [w.id for w in await app.workers()]
    await app.close()


@pytest.mark.parametrize(
    ("result", "reason"),
    [({"x": object()}, "not JSON-serialisable"), ([math.nan], "NaN"), ("x" * 5000, "exceeds the limit")],
)
async def test_an_invalid_result_fails_the_attempt_at_once_and_for_good(result: object, reason: str) -> None:
    app = AsyncConveyor(settings=Settings(url="memory://", poll_interval=0.05, retry_delay=0, max_payload_size=4096))
    calls: list[int] = []

    @app.handler("t")
    def handle(job: Job) -> object:
        calls.append(job.attempts)
        return result

    job = await app.enqueue("t", {}, max_retries=3)
    await app.start()
    try:
        for _ in range(500):
            current = await app.get(job.id)
            if current.status == "failed":
                break
            await asyncio.sleep(0.01)
        assert current.status == "failed"
        assert calls == [1] and current.attempts == 1
        assert current.last_error is not None and "result" in current.last_error and reason in current.last_error
        assert current.result is None
    finally:
        await app.close()
