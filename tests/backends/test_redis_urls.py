"""Redis URLs: every form parses to the right target, a malformed one is a
ConfigurationError naming the URL without its password (no server needed)."""

from __future__ import annotations

import pytest

from conveyor.backends import open_backend
from conveyor.backends.redis import driver
from conveyor.core.errors import BackendUnavailable, ConfigurationError


def test_a_single_server_url_with_acl_user_and_tls() -> None:
    t = driver.parse("rediss://app:s3cret@cache.internal:6380/2?prefix=billing&ssl_cert_reqs=none")
    assert (t.kind, t.nodes, t.db, t.prefix, t.tls) == ("server", (("cache.internal", 6380),), 2, "billing", True)
    assert (t.username, t.password) == ("app", "s3cret")
    assert t.tls_options == {"ssl_cert_reqs": "none"}
    assert "s3cret" not in t.display and "app:***@" in t.display


def test_a_cluster_url_lists_its_seeds_and_hash_tags_the_prefix() -> None:
    t = driver.parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/?prefix=jobs")
    assert t.kind == "cluster"
    assert t.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert t.prefix == "{jobs}"  # every key of the namespace in one slot
    assert driver.parse("redis+cluster://a:1/?prefix=x{tag}").prefix == "x{tag}"  # a tag of its own is kept
    assert driver.parse("redis+cluster://a:1").prefix == "{conveyor}"


def test_a_sentinel_url_names_its_service_and_database() -> None:
    t = driver.parse("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3?sentinel_password=spw")
    assert (t.kind, t.service, t.db, t.password) == ("sentinel", "mymaster", 3, "pw")
    assert t.nodes == (("s1", 26379), ("s2", 26380))
    assert t.sentinel_auth == {"password": "spw"}
    assert "spw" not in t.display and "pw@" not in t.display


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://:hunter2@s1:26379", "service name"),
        ("redis://:hunter2@h:6379/zero", "database number"),
        ("redis://:hunter2@h:notaport/0", "invalid port"),
        ("redis://:hunter2@h:70000/0", "out of range"),
        ("redis://:hunter2@a:1,b:2/0", "one host"),
        ("redis+cluster://:hunter2@a:1,b:2/1", "database 0 only"),
        ("redis+swarm://:hunter2@a:1", "scheme"),
        ("redis://:hunter2@h:6379/0?prefix=ok&colour=blue", "unknown query parameter 'colour'"),
        ("redis://:hunter2@h:6379/0?prefix=has%20space", "prefix"),
        ("redis://:hunter2@h:6379/0?prefix=", "invalid key prefix ''"),
        ("rediss://:hunter2@h:6379/0?ssl_cert_reqs=bogus", "ssl_cert_reqs must be one of none, optional, required"),
    ],
)
def test_a_malformed_url_is_a_configuration_error_without_its_password(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        driver.parse(url)
    assert reason in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_open_backend_reports_a_bad_redis_url_without_its_password() -> None:
    with pytest.raises(ConfigurationError, match=r"redis\+sentinel://:\*\*\*@s1:26379") as info:
        open_backend("redis+sentinel://:hunter2@s1:26379")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://app:hunter2@127.0.0.1:1,127.0.0.1:2/?prefix=x",
        "redis+sentinel://app:hunter2@127.0.0.1:1/mymaster/0",
        "rediss://app:hunter2@127.0.0.1:1/0",
    ],
)
async def test_unreachable_seeds_are_backend_unavailable_naming_the_url_without_its_password(url: str) -> None:
    from conveyor.backends.redis.backend import RedisBackend

    backend = RedisBackend(url, socket_connect_timeout=1)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.connect()
        assert "app:***@127.0.0.1:1" in str(info.value)
        assert "hunter2" not in str(info.value)
    finally:
        await backend.close()


def test_connections_use_tcp_keepalive_and_no_per_command_timer_unless_asked() -> None:
    import socket

    target = driver.parse("redis://127.0.0.1:6379/0")
    kwargs = driver._connection_kwargs(target)
    assert kwargs["socket_timeout"] is None and kwargs["socket_connect_timeout"] == 5.0
    assert kwargs["socket_keepalive"] is True
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert kwargs["socket_keepalive_options"][socket.TCP_KEEPIDLE] == 10
    asked = driver.parse("redis://127.0.0.1:6379/0", timeouts={"socket_timeout": 2})
    assert driver._connection_kwargs(asked)["socket_timeout"] == 2.0


def test_timeouts_come_from_the_url_and_a_keyword_wins() -> None:
    from conveyor import Conveyor
    from conveyor.backends.redis.backend import RedisBackend

    url = "redis://127.0.0.1:6379/0?socket_timeout=2.5&socket_connect_timeout=1"
    kwargs = driver._connection_kwargs(driver.parse(url))
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.5, 1.0)
    backend = RedisBackend(url, socket_connect_timeout=3)
    assert driver._connection_kwargs(backend._target)["socket_connect_timeout"] == 3.0
    app = Conveyor(url)  # what a user (or CONVEYOR_URL) can set
    try:
        assert driver._connection_kwargs(app.aio.backend._target)["socket_timeout"] == 2.5  # type: ignore[attr-defined]
    finally:
        app.close()


@pytest.mark.parametrize(
    "query", ["socket_timeout=soon", "socket_timeout=0", "socket_connect_timeout=-1", "socket_timeout=inf"]
)
def test_a_bad_timeout_in_the_url_is_a_configuration_error_naming_it(query: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{query.partition('=')[0]} must be a positive number of seconds"):
        driver.parse(f"redis://127.0.0.1:6379/0?{query}")


async def test_no_reachable_sentinel_says_which_sentinels_and_service_not_the_drivers_internals() -> None:
    from conveyor.backends.redis.backend import RedisBackend

    backend = RedisBackend("redis+sentinel://127.0.0.1:1,127.0.0.1:2/orders/0", socket_connect_timeout=1)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.connect()
        message = str(info.value)
        assert "127.0.0.1:1, 127.0.0.1:2" in message and "'orders'" in message
        assert "ConnectionPool" not in message  # redis-py's repr of its client
    finally:
        await backend.close()


async def test_a_database_the_server_does_not_have_is_a_configuration_error(redis_url: str) -> None:
    from conveyor.backends.redis.backend import RedisBackend

    server = redis_url.split("?", 1)[0].rsplit("/", 1)[0]
    backend = RedisBackend(f"{server}/16000?prefix=nodb")
    try:
        with pytest.raises(ConfigurationError, match="the server has no database 16000"):
            await backend.connect()
    finally:
        await backend.close()
