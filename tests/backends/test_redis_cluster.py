"""Redis Cluster specifics (the conformance suite runs on it too, as ``redis-cluster``):
every key of a namespace in one slot, scripts routed to its node, wake-ups and events
over shard channels, the sync facade's blocking enqueue through the cluster client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.cluster

from conveyor import Conveyor
from conveyor.backends.redis.backend import RedisBackend
from conveyor.core.events import Event
from conveyor.core.job import Job
from conveyor.core.options import JobDefaults, build_job
from tests import services


@pytest.fixture
async def backend(redis_cluster: services.RedisClusterService) -> AsyncIterator[RedisBackend]:
    prefix = "t" + uuid.uuid4().hex[:12]
    b = RedisBackend(f"{redis_cluster.url}/?prefix={prefix}")
    await b.connect()
    yield b
    await b.close()
    services.delete_redis_prefix(prefix, redis_cluster.url)


def new_job(topic: str = "t") -> Job:
    return build_job(topic, {"x": 1}, now=datetime.now(UTC), defaults=JobDefaults())


async def test_every_key_of_a_namespace_lands_in_one_slot(
    backend: RedisBackend, redis_cluster: services.RedisClusterService
) -> None:
    assert backend.keys.prefix.startswith("{") and backend.keys.prefix.endswith("}")
    await backend.enqueue([new_job(topic) for topic in ("a", "b", "c") for _ in range(5)])
    now = datetime.now(UTC)
    claimed = await backend.claim(worker_id="w", topics=["a", "b", "c"], limit=4, now=now, locked_until=now)
    assert len(claimed) == 4
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        keys = list(client.scan_iter(match=f"{backend.keys.prefix}:*", count=1000))
        assert len(keys) > 15
        assert {client.keyslot(k) for k in keys} == {client.keyslot(backend.keys.prefix)}
    finally:
        client.close()


async def test_wake_ups_and_events_cross_clients_on_a_cluster(
    backend: RedisBackend, redis_cluster: services.RedisClusterService
) -> None:
    other = RedisBackend(backend.url)
    try:
        await other.connect()
        events = await backend.subscribe()
        assert await backend.events_ready(10)
        await backend.wait_for_jobs(0.5)  # subscribes to the wake-ups
        waiter = asyncio.create_task(backend.wait_for_jobs(10))
        await asyncio.sleep(0.05)
        await other.enqueue([new_job()])
        assert await asyncio.wait_for(waiter, 5)
        await other.publish([Event("job.completed", "abc", "t", "completed", datetime.now(UTC), {"n": 1})])
        event = await asyncio.wait_for(anext(events), 5)
        assert (event.type, event.job_id) == ("job.completed", "abc")
    finally:
        await other.close()


def test_the_sync_facade_enqueues_through_the_cluster_client(backend: RedisBackend) -> None:
    app = Conveyor(backend.url)
    try:
        jobs = [app.enqueue("t", {"i": i}) for i in range(20)]
        assert app.stats()["pending"] == 20
        assert {app.get(j.id).id for j in jobs} == {j.id for j in jobs}
    finally:
        app.close()
