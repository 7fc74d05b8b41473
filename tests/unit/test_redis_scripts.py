"""How the Redis backend's Lua scripts are built (no server: the text and the record
layout the scripts rely on). Running them is tests/backends/test_redis_specific.py's."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.backends.redis import record
from conveyor.backends.redis.keys import LUA_COMMENT, lua_with_keys
from conveyor.backends.redis.lua import scripts
from conveyor.core import codec
from conveyor.core.options import JobDefaults, build_job

HEADER = "local PREFIX = KEYS[1] .. ':'\n"


def test_a_key_call_is_written_out_as_the_expression_that_builds_its_name() -> None:
    assert lua_with_keys("return k_job(id)") == HEADER + "return (PREFIX .. 'job:' .. (id))"
    assert lua_with_keys("return k_topics()") == HEADER + "return (PREFIX .. 'topics')"
    assert lua_with_keys("x = k_topic_status('pending', t)") == (
        HEADER + "x = (PREFIX .. 'ts:' .. ('pending') .. ':' .. (t))"
    )


def test_arguments_with_calls_commas_and_parentheses_in_strings_stay_whole() -> None:
    assert lua_with_keys("k_job(string.sub(m, 17))") == HEADER + "(PREFIX .. 'job:' .. (string.sub(m, 17)))"
    assert lua_with_keys("k_job(a .. ',)(' .. b)") == HEADER + "(PREFIX .. 'job:' .. (a .. ',)(' .. b))"
    assert lua_with_keys("k_job(t[k_ready(x)])") == (HEADER + "(PREFIX .. 'job:' .. (t[(PREFIX .. 'ready:' .. (x))]))")


def test_key_calls_in_comments_are_left_as_they_are() -> None:
    text = "-- k_job(id) is a job's hash\nlocal k = k_job(id)  -- k_job(id)\n"
    assert (
        lua_with_keys(text)
        == HEADER + "-- k_job(id) is a job's hash\nlocal k = (PREFIX .. 'job:' .. (id))  -- k_job(id)\n"
    )


def test_an_unknown_key_or_a_wrong_number_of_arguments_is_refused() -> None:
    with pytest.raises(ValueError, match="k_jobs"):
        lua_with_keys("k_jobs(id)")
    with pytest.raises(ValueError, match="k_topic_status takes 2"):
        lua_with_keys("k_topic_status(t)")
    with pytest.raises(ValueError, match="unbalanced"):
        lua_with_keys("k_job('id)")


def test_no_built_script_defines_a_key_function_or_calls_one() -> None:
    for script in scripts().values():
        code = LUA_COMMENT.sub("", script.text)
        assert not re.search(r"\bk_\w+\(", code), script.name


def test_a_script_defines_only_the_helpers_its_code_calls_not_those_its_comments_name() -> None:
    # Each helper is a closure made again on every call of the script.
    enqueue = scripts()["enqueue"].text
    defined = set(re.findall(r"^local function (\w+)", enqueue, re.M))
    assert defined == {
        "ready_member", "unique_field", "new_batch", "aside", "zadd", "flush_index", "index_pending",
        "insert_job", "wake",
    }  # fmt: skip
    assert "index_state" in scripts()["finish"].text


def test_a_job_record_opens_with_the_fields_the_scripts_read_by_position() -> None:
    # _lib.lua's insert_job reads created_at, then the values of id, topic, payload,
    # status, priority, run_at, max_retries and fixed at these (1-based) positions and
    # looks for optional field, value pairs after them.
    now = datetime(2026, 1, 2, tzinfo=UTC)
    job = build_job("t", {"x": 1}, now=now, defaults=JobDefaults(), unique_key="u", priority=7)
    flat = codec.loads(record.encode_job(job, codec.dumps(job.payload)))
    assert flat[:8] == [
        record.to_us(now), job.id, "t", '{"x":1}', "pending", "7", record.to_us(now), str(job.max_retries),
    ]  # fmt: skip
    assert codec.loads(flat[8]) == [record.to_us(now), job.retry_delay, job.backoff, job.max_snoozes, None, None]
    assert flat[9:] == ["unique_key", "u"]  # every other field at its default: left out


def test_a_record_leaves_out_the_fields_at_their_defaults_and_reads_back_equal() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    plain = build_job("t", None, now=now, defaults=JobDefaults())
    assert len(codec.loads(record.encode_job(plain, b"null"))) == 9
    busy = replace(
        build_job("t", {"x": 1}, now=now, defaults=JobDefaults(), metadata={"m": 1}, timeout=2.5, unique_key="u"),
        attempts=2, snoozes=1, cancel_requested=True, errors=[{"attempt": 1, "error": "boom"}],
        updated_at=now + timedelta(seconds=1), last_error="boom", schedule="nightly",
    )  # fmt: skip
    for job in (plain, busy):
        flat = codec.loads(record.encode_job(job, codec.dumps(job.payload)))
        names = ["id", "topic", "payload", "status", "priority", "run_at", "max_retries", "fixed"]
        stored = [x for pair in zip(names, flat[1:9], strict=True) for x in pair] + flat[9:]
        assert record.decode_job([x.encode() for x in stored]) == job
