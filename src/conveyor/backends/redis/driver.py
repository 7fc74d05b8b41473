"""How the Redis backend reaches Redis: conveyor's Redis URLs → redis-py clients, and
redis-py's exceptions → conveyor's errors.

Imports only ``conveyor.core`` and redis-py (hiredis as its parser). The URLs::

    redis://[user:password@]host:port/db[?prefix=name]        one server
    rediss://...                                              the same over TLS
    redis+cluster://[user:password@]host:port[,host:port...]/?prefix=name
    redis+sentinel://[user:password@]host:port[,host:port...]/service/db[?prefix=name]

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS to every node. TLS options
ride in the query (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs``); ``sentinel_password`` (and ``sentinel_username``) authenticate to
the Sentinels when they need other credentials than the primary's. Every error message
names the URL without its password (``Target.display``).

Redirects (MOVED/ASK), the Cluster's topology and the Sentinel's choice of primary are
redis-py's job. Commands are not retried by the single-server and Sentinel clients: a
state change whose reply was lost must not run again behind the caller's back; the
caller sees ``BackendUnavailable`` and the worker backs off and calls again (on a
fresh connection: to the new primary after a failover).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from conveyor.backends.redis.keys import DEFAULT_PREFIX, cluster_prefix
from conveyor.core.errors import BackendError, BackendUnavailable, ConfigurationError

SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")  # seconds, also keyword options
_OWN_OPTIONS = ("prefix", "sentinel_password", "sentinel_username", *_TLS_OPTIONS, *_TIMEOUTS)
_CERT_REQS = ("none", "optional", "required")  # what redis-py accepts (checked when it connects)
# Error replies meaning "Redis cannot serve right now", not "the command is wrong".
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY", "CLUSTERDOWN", "NOREPLICAS")
_UNAVAILABLE = (
    redis.ConnectionError,  # the Sentinel's MasterNotFoundError is one
    redis.TimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    OSError,
)


@dataclass(frozen=True)
class Target:
    """Where a Redis URL points, parsed once."""

    kind: str  # "server", "cluster" or "sentinel"
    nodes: tuple[tuple[str, int], ...]
    db: int
    prefix: str
    display: str  # the URL with its password masked
    username: str | None = None
    password: str | None = None
    tls: bool = False
    service: str | None = None
    tls_options: dict[str, str] = field(default_factory=dict)
    sentinel_auth: dict[str, str] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)  # socket_timeout, socket_connect_timeout


def masked(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + hosts
    query_masked = "&".join(
        f"{name}=***" if name.endswith("password") else f"{name}={value}"
        for name, value in parse_qsl(tail.partition("?")[2], keep_blank_values=True)
    )
    if "?" in tail:
        tail = tail.partition("?")[0] + "?" + query_masked
    return f"{scheme}://{netloc}{slash}{tail}"


def parse(url: str, *, prefix: str | None = None, timeouts: dict[str, Any] | None = None) -> Target:
    """Parse a conveyor Redis URL. ``prefix`` wins over ``?prefix=``, ``timeouts``
    (keyword ``socket_timeout``/``socket_connect_timeout``) over the URL's.

    Raises:
        ConfigurationError: unknown scheme, bad host list, port, database or service.
    """
    display = masked(url)

    def bad(reason: str) -> NoReturn:
        raise ConfigurationError(f"invalid Redis URL {display!r}: {reason}")

    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        bad(f"the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    kind = scheme.split("+", 1)[1] if "+" in scheme else "server"
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_node(part, bad) for part in (hostlist.split(",") if hostlist else ["127.0.0.1"]))
    if kind == "server" and len(nodes) > 1:
        bad("one host:port for redis:// (use redis+cluster:// or redis+sentinel:// for several)")
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _OWN_OPTIONS:
            bad(f"unknown query parameter {name!r} (known: {', '.join(_OWN_OPTIONS)})")
        options[name] = value
    segments = [s for s in path.split("/") if s]
    service = None
    if kind == "sentinel":
        if not segments:
            bad("redis+sentinel:// needs the monitored service name as the path: /service/db")
        service, segments = unquote(segments[0]), segments[1:]
    if len(segments) > 1 or (segments and not segments[0].isdigit()):
        bad("the path must be a database number like /0")
    db = int(segments[0]) if segments else 0
    if kind == "cluster" and db:
        bad("a Redis Cluster has database 0 only")
    if options.get("ssl_cert_reqs", "required") not in _CERT_REQS:
        bad(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, got {options['ssl_cert_reqs']!r}")
    seconds: dict[str, float] = {}
    for key in _TIMEOUTS:
        given = (timeouts or {}).get(key)
        raw: Any = given if given is not None else options.get(key)
        if raw is None:
            continue
        try:
            seconds[key] = float(raw)
        except (TypeError, ValueError):
            seconds[key] = -1.0
        if not 0 < seconds[key] < float("inf"):
            bad(f"{key} must be a positive number of seconds, got {raw!r}")
    name = prefix or options.get("prefix", DEFAULT_PREFIX)
    if not name or any(c.isspace() for c in name):
        bad(f"invalid key prefix {name!r}: it must not be empty nor hold spaces")
    return Target(
        kind=kind,
        nodes=nodes,
        db=db,
        prefix=cluster_prefix(name) if kind == "cluster" else name,
        display=display,
        username=username,
        password=password,
        tls=scheme.startswith("rediss"),
        service=service,
        tls_options={k: options[k] for k in _TLS_OPTIONS if k in options},
        sentinel_auth={
            k.removeprefix("sentinel_"): options[k] for k in ("sentinel_username", "sentinel_password") if k in options
        },
        timeouts=seconds,
    )


def _node(part: str, bad: Any) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, _, port = part[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
    if not host:
        bad(f"empty host in {part!r}")
    if port and not port.isdigit():
        bad(f"invalid port in {part!r}")
    number = int(port) if port else 6379
    if not 0 < number < 65536:
        bad(f"port out of range in {part!r}")
    return host, number


# A connection whose peer vanished (a partition, a host gone without a reset) is found
# by TCP keepalive within about IDLE + INTERVAL * COUNT seconds: no timer is armed
# around every command for it (redis-py's socket_timeout costs a timeout scope per
# read; ``socket_timeout=`` still sets one).
_KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}


def _keepalive_options() -> dict[int, int]:
    import socket

    return {getattr(socket, name): value for name, value in _KEEPALIVE.items() if hasattr(socket, name)}


def _connection_kwargs(target: Target) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": target.timeouts.get("socket_timeout"),
        "socket_connect_timeout": target.timeouts.get("socket_connect_timeout", 5.0),
        "socket_keepalive": True,
        "socket_keepalive_options": _keepalive_options(),
    }
    if target.tls:
        kwargs["ssl"] = True
        kwargs.update(target.tls_options)
    return kwargs


def _no_retry() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(NoBackoff(), 0)


def _no_retry_sync() -> redis.retry.Retry:
    return redis.retry.Retry(NoBackoff(), 0)


def async_client(target: Target) -> Any:
    """The asyncio client for ``target``: ``redis.asyncio.Redis`` (one server or the
    Sentinel's primary) or ``redis.asyncio.cluster.RedisCluster``."""
    kwargs = _connection_kwargs(target)
    if target.kind == "cluster":
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in target.nodes]
        return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **kwargs)
    if target.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target, kwargs), **kwargs
        )
        return sentinel.master_for(target.service or "", db=target.db, retry=_no_retry())
    host, port = target.nodes[0]
    return redis.asyncio.Redis(host=host, port=port, db=target.db, retry=_no_retry(), **kwargs)


def sync_client(target: Target) -> Any:
    """The blocking twin of ``async_client`` (the sync facade's enqueue, on its thread)."""
    kwargs = _connection_kwargs(target)
    if target.kind == "cluster":
        nodes = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in target.nodes
        ]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target, kwargs), **kwargs
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
            target.service or "", db=target.db, retry=_no_retry_sync()
        )
    host, port = target.nodes[0]
    return redis.Redis(host=host, port=port, db=target.db, retry=_no_retry_sync(), **kwargs)


# A held connection idle for longer is given back and taken again through the pool,
# whose checkout polls the socket: one that the server or a proxy closed while idle is
# replaced there, not found broken by a command.
HELD_IDLE = 1.0


class HeldConnection:
    """One connection of ``client``'s pool held for callers that run one command at a
    time (redis-py's ``single_connection_client``); holds nothing on a Cluster, whose
    client routes each command to a node of its own.

    Why: redis-py's pool checkout and release cost as much as the rest of a command. A
    pooled ``PING`` is ~275k instructions in the asyncio client (the checkout polls the
    socket, an event-loop turn) against ~145k on a held connection, and ~137k against
    ~69k in the blocking client (callgrind, redis-py 7.4; bench/README.md). The
    connection stays in the pool's books: the pool's ``disconnect()`` (a Sentinel
    failover) drops it too, and the next command reconnects.

    ``take()`` gives it to one caller at a time (a non-blocking lock: the sync facade's
    threads, or the tasks of one event loop); the others use the pool meanwhile.
    """

    def __init__(self, target: Target, client: Any) -> None:
        self._target = target
        self._client = client
        self._held: Any = None  # made on first use, and again after HELD_IDLE unused
        self._lock = threading.Lock()
        self._used = 0.0

    def take(self) -> tuple[Any, Any]:
        """``(held, stale)``. ``held``: the held client, now the caller's until
        ``give_back()``, or None when another caller has it (or on a Cluster): use the
        pool. ``stale``: a held client that sat idle past ``HELD_IDLE``, now replaced,
        for the caller to close first (its connection back to the pool), or None.
        Raises what connecting raises (the blocking client connects when made)."""
        if self._target.kind == "cluster" or not self._lock.acquire(blocking=False):
            return None, None
        now = time.monotonic()
        stale = None
        if self._held is not None and now - self._used > HELD_IDLE:
            stale, self._held = self._held, None
        if self._held is None:
            cls = _HeldAsyncClient if isinstance(self._client, redis.asyncio.Redis) else redis.Redis
            try:
                # The blocking client connects here (the asyncio one on its first command).
                self._held = cls(connection_pool=self._client.connection_pool, single_connection_client=True)
            except BaseException:
                self._held = stale  # kept for the next caller: nothing leaks from the pool
                self._lock.release()
                raise
        self._used = now
        return self._held, stale

    def give_back(self, *, failed: bool = False) -> None:
        """``failed``: the command failed (connection lost, READONLY, NOREPLICAS...): the
        held client is given up, closed by the next taker as a stale one, so that the next
        command takes a connection from the pool. The pool's checkout connects where the
        Sentinels say the primary is; a held connection reconnects to the address it had
        (redis-py 7.4's ``send_packed_command``), and behind a Sentinel that is the old
        primary, demoted, for ever."""
        if failed:
            self._used = float("-inf")
        self._lock.release()

    def drop(self) -> Any:
        """The held client, forgotten (the store is closing): the caller closes it."""
        held, self._held = self._held, None
        return held


async def run_script(client: Any, script: Any, prefix: str, args: Sequence[Any]) -> Any:
    """``EVALSHA`` of a registered script (``register_script``) on ``client``, with the
    prefix as its one key and first argument; loaded again after a NOSCRIPT (a restart,
    a ``SCRIPT FLUSH``), as redis-py's script object does when called. Called directly:
    that object's call (an import, tuple copies, a pipeline check per call) is ~20k
    instructions of an enqueue's ~390k (callgrind, bench/README.md)."""
    try:
        return await client.evalsha(script.sha, 1, prefix, prefix, *args)
    except NoScriptError:
        script.sha = await client.script_load(script.script)
        return await client.evalsha(script.sha, 1, prefix, prefix, *args)


def run_script_sync(client: Any, script: Any, prefix: str, args: Sequence[Any]) -> Any:
    """``run_script`` with the blocking client."""
    try:
        return client.evalsha(script.sha, 1, prefix, prefix, *args)
    except NoScriptError:
        script.sha = client.script_load(script.script)
        return client.evalsha(script.sha, 1, prefix, prefix, *args)


class _HeldAsyncClient(redis.asyncio.Redis):
    """redis-py's asyncio client on one held connection, collected quietly: redis-py's
    ``__del__`` closes that connection through its event loop and prints a traceback
    when the loop is closed already (``asyncio.run`` ended without ``close()``). The
    connection's own ``__del__``, which checks for a running loop, is left to do it."""

    def __del__(self, *args: Any, **kwargs: Any) -> None:
        self.connection = None


async def aclose(client: Any) -> None:
    """Close an ``async_client`` (and, behind a Sentinel, the Sentinels' connections)."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def close(client: Any) -> None:
    """Close a ``sync_client`` (and, behind a Sentinel, the Sentinels' connections)."""
    client.close()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


def _sentinel_kwargs(target: Target, kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in ("username", "password")}
    out.update(target.sentinel_auth)
    return out


def pubsub_client(target: Target, client: Any, channel: str) -> Any:
    """A client whose ``pubsub()`` can subscribe to ``channel``: the client itself, or on a
    Cluster a single-node client for the primary owning the channel's slot (a Cluster
    delivers a PUBLISH to the subscribers of every node; the slot's owner is the node
    this namespace already depends on)."""
    if target.kind != "cluster":
        return client
    node = client.get_node_from_key(channel)
    if node is None:
        raise BackendUnavailable(f"redis at {target.display}: no node serves the slot of {channel!r}")
    return redis.asyncio.Redis(host=node.host, port=node.port, retry=_no_retry(), **_connection_kwargs(target))


SWITCH_MASTER = "+switch-master"
"""The Sentinels' channel announcing a failover: ``<service> <old ip> <old port> <new ip> <new port>``."""


def sentinel_clients(target: Target) -> Callable[[], Awaitable[Any]]:
    """For a ``ChannelListener`` on ``SWITCH_MASTER``: a client of the next Sentinel each
    call (one that is down is skipped on the next attempt)."""
    kwargs = {k: v for k, v in _connection_kwargs(target).items() if k not in ("username", "password")}
    kwargs.update(target.sentinel_auth)
    addresses = itertools.cycle(target.nodes)

    async def open_client() -> Any:
        host, port = next(addresses)
        return redis.asyncio.Redis(host=host, port=port, retry=_no_retry(), **kwargs)

    return open_client


def unavailable(target: Target, exc: BaseException) -> NoReturn:
    if isinstance(exc, (redis.sentinel.MasterNotFoundError, redis.asyncio.sentinel.MasterNotFoundError)):
        # redis-py's message embeds the repr of its whole client (pool, options).
        sentinels = ", ".join(f"{host}:{port}" for host, port in target.nodes)
        reason = f"no Sentinel of {sentinels} named a reachable primary for service {target.service!r}"
        raise BackendUnavailable(f"redis at {target.display} is unavailable: {reason}") from exc
    raise BackendUnavailable(f"redis at {target.display} is unavailable: {exc}") from exc


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis cannot be reached or serve right now"."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).startswith(_TRANSIENT_REPLIES)
    return isinstance(exc, RedisClusterException)


def translate(target: Target, exc: BaseException, what: str) -> NoReturn:
    """Raise the conveyor error for a redis-py (or socket) exception."""
    if isinstance(exc, ResponseError) and "DB index is out of range" in str(exc):
        raise ConfigurationError(f"invalid Redis URL {target.display!r}: the server has no database {target.db}")
    if isinstance(exc, _UNAVAILABLE):
        unavailable(target, exc)
    if isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES):
        unavailable(target, exc)
    if isinstance(exc, RedisClusterException) and not isinstance(exc, ResponseError):
        unavailable(target, exc)  # "Redis Cluster cannot be connected", no node reachable
    raise BackendError(f"redis {what} failed at {target.display}: {exc}") from exc


ERRORS = (RedisError, RedisClusterException, OSError)
"""What a redis-py call may raise (``translate`` maps each to a conveyor error)."""
