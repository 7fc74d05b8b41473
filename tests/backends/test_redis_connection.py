"""The blocking RESP connection of the sync facade's enqueue: polling for replies, and
sleeping for them when they come late, always with the right reply."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conveyor.backends.redis import connection
from conveyor.backends.redis.connection import BlockingConnection, Endpoint, RespError


@pytest.fixture
def conn(redis_url: str) -> Iterator[BlockingConnection]:
    c = BlockingConnection(Endpoint.from_url(redis_url))
    yield c
    c.close()


def test_replies_come_back_in_order_while_polling(conn: BlockingConnection) -> None:
    key = f"conn-test:{uuid.uuid4().hex}"
    for i in range(200):
        assert conn.execute("INCR", key) == i + 1
    conn.execute("DEL", key)


def test_a_reply_later_than_the_budget_pauses_polling_then_polling_resumes(conn: BlockingConnection) -> None:
    # BLPOP on an empty list answers (nil) only after its 20 ms timeout.
    assert conn.execute("BLPOP", f"conn-test:{uuid.uuid4().hex}", "0.02") is None
    assert conn._pacer.pause == connection.POLL_PAUSE
    for _ in range(connection.POLL_PAUSE):
        assert conn.execute("PING") == b"PONG"
    assert conn._pacer.pause == 0
    assert conn.execute("ECHO", "again") == b"again"


def test_a_reply_larger_than_one_read_is_assembled(conn: BlockingConnection) -> None:
    key = f"conn-test:{uuid.uuid4().hex}"
    value = b"x" * 3_000_000
    conn.execute("SET", key, value)
    assert conn.execute("GET", key) == value
    conn.execute("DEL", key)


def test_an_error_reply_raises_and_the_connection_stays_usable(conn: BlockingConnection) -> None:
    with pytest.raises(RespError, match="unknown command"):
        conn.execute("NO-SUCH-COMMAND")
    assert conn.execute("PING") == b"PONG"


def test_a_connection_closed_by_the_server_fails_the_call_and_the_next_reconnects(
    conn: BlockingConnection, redis_url: str
) -> None:
    client_id = conn.execute("CLIENT", "ID")
    other = BlockingConnection(Endpoint.from_url(redis_url))
    try:
        assert other.execute("CLIENT", "KILL", "ID", client_id) == 1
    finally:
        other.close()
    with pytest.raises(ConnectionError):
        conn.execute("PING")
    assert conn.execute("PING") == b"PONG"


def test_tls_connections_never_poll() -> None:
    c = BlockingConnection(Endpoint.from_url("rediss://127.0.0.1:6390/0"))
    assert c._can_poll is False


async def test_polled_async_commands_get_their_replies_and_pause_after_a_late_one(redis_url: str) -> None:
    import asyncio

    from conveyor.backends.redis.connection import RespConnection

    conn = RespConnection(Endpoint.from_url(redis_url))
    key = f"conn-test:{uuid.uuid4().hex}"
    try:
        for i in range(100):
            assert await conn.execute("INCR", key, poll=True) == i + 1
        # Many in flight at once: no polling, every caller still gets its own reply.
        replies = await asyncio.gather(*(conn.execute("INCR", key, poll=True) for _ in range(50)))
        assert sorted(replies) == list(range(101, 151))
        conn._pacer.pause = 0  # whatever the timing of the calls above
        assert await conn.execute("BLPOP", f"{key}:empty", "0.02", poll=True) is None  # answers after 20 ms
        assert conn._pacer.pause == connection.POLL_PAUSE
        for _ in range(connection.POLL_PAUSE):
            assert await conn.execute("PING", poll=True) == b"PONG"
        assert conn._pacer.pause == 0
        await conn.execute("DEL", key)
    finally:
        await conn.close()
