"""Where the test suite finds PostgreSQL and Redis, and how it isolates each test; the
private servers it starts itself on free loopback ports (a 3-master Redis Cluster, a
Redis primary + replica watched by a Sentinel) for the session-scoped fixtures of
``tests/conftest.py``, stopped at the end of the session.

Outside CI an unreachable service skips with a reason; with CI=true it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(service: str, exc: BaseException) -> None:
    message = f"{service} is not reachable: {exc}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _with_query(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


def new_postgres_url() -> tuple[str, str]:
    """A URL isolated in a fresh schema, and that schema's name."""
    schema = "t_" + uuid.uuid4().hex[:12]
    return _with_query(POSTGRES_URL, "schema", schema), schema


def drop_postgres_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def check_postgres() -> None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        unavailable("PostgreSQL", exc)


def new_redis_url() -> tuple[str, str]:
    prefix = "t" + uuid.uuid4().hex[:12]
    return _with_query(REDIS_URL, "prefix", prefix), prefix


def delete_redis_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every key under ``prefix`` (on a Cluster: under its hash tag ``{prefix}``)."""
    import redis
    import redis.cluster

    client: Any
    if url.startswith("redis+cluster://"):
        seeds = url.removeprefix("redis+cluster://").split("/", 1)[0].split(",")
        nodes = [redis.cluster.ClusterNode(h, int(p)) for h, p in (s.rsplit(":", 1) for s in seeds)]
        client, prefix = redis.cluster.RedisCluster(startup_nodes=nodes), "{" + prefix + "}"
    else:
        client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def check_redis() -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        unavailable("Redis", exc)


@contextlib.contextmanager
def isolated_store(kind: str, tmp_path: Path, *, base_url: str | None = None) -> Iterator[str]:
    """A store URL of ``kind`` (memory, sqlite, postgres, postgres-pgbouncer, redis,
    redis-cluster) isolated for one test, cleaned up afterwards. ``base_url``: the
    Cluster's URL for redis-cluster (the ``redis_cluster`` fixture's), the PgBouncer URL
    with ``__SCHEMA__`` for postgres-pgbouncer (the ``pgbouncer`` fixture's)."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/conveyor.db"
    elif kind == "postgres":
        check_postgres()
        url, schema = new_postgres_url()
        try:
            yield url
        finally:
            drop_postgres_schema(schema)
    elif kind == "redis":
        check_redis()
        url, prefix = new_redis_url()
        try:
            yield url
        finally:
            delete_redis_prefix(prefix)
    elif kind == "postgres-pgbouncer":
        assert base_url is not None, "postgres-pgbouncer needs the pgbouncer fixture's URL"
        check_postgres()
        schema = "t_" + uuid.uuid4().hex[:12]
        try:
            yield base_url.replace("__SCHEMA__", schema)
        finally:
            drop_postgres_schema(schema)
    elif kind == "redis-cluster":
        assert base_url is not None, "redis-cluster needs the redis_cluster fixture's URL"
        prefix = "t" + uuid.uuid4().hex[:12]
        try:
            yield _with_query(base_url, "prefix", prefix)
        finally:
            delete_redis_prefix(prefix, base_url)
    else:
        raise ValueError(f"unknown store kind {kind!r}")


# -- private Redis servers: a Cluster and a Sentinel setup ----------------------------


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port; ``with_bus``: port + 10000 is free too (a Cluster node's bus)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # pgbouncer lives in sbin
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (scripts/ensure-services.sh installs it)")
    return path


class RedisProcess:
    """One private redis-server (or Sentinel) on a free loopback port, in its own folder."""

    def __init__(self, folder: Path, *args: str, port: int | None = None, sentinel: bool = False) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.args = args
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        conf = self.folder / "redis.conf"
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.folder}", "save ''", "appendonly no"]
        if self.sentinel:
            lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.folder}"]
        conf.write_text("\n".join([*lines, *self.args]) + "\n")
        command = [_binary("redis-server"), str(conf)]
        if self.sentinel:
            sentinel = shutil.which("redis-sentinel")
            command = [sentinel, str(conf)] if sentinel else [*command, "--sentinel"]
        with (self.folder / "log.txt").open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis on port {self.port} exited: {(self.folder / 'log.txt').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis on port {self.port} did not start within {timeout}s")

    def command(self, *args: str | int) -> Any:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=10)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class RedisClusterService:
    """Three masters, no replicas, every slot covered: ``url`` is its redis+cluster:// URL."""

    def __init__(self, folder: Path) -> None:
        self.nodes = [
            RedisProcess(
                folder / f"node{i}",
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 2000",
                port=free_port(with_bus=True),
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [_binary("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelService:
    """A primary, one replica and a Sentinel watching them as ``service``."""

    service = "conveyor-test"

    def __init__(self, folder: Path) -> None:
        # As docs/redis.md recommends: a primary that lost its replica (the one promoted
        # in its place) refuses writes instead of taking ones that the failover loses.
        safe = ("min-replicas-to-write 1", "min-replicas-max-lag 10")
        self.primary = RedisProcess(folder / "a", *safe)
        self.replica = RedisProcess(folder / "b", f"replicaof 127.0.0.1 {self.primary.port}", *safe)
        self.sentinel = RedisProcess(
            folder / "sentinel",
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1",
            f"sentinel down-after-milliseconds {self.service} 2000",
            f"sentinel failover-timeout {self.service} 10000",
            sentinel=True,
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def primary_port(self) -> int:
        host_port = self.sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(host_port[1])

    def current_primary(self) -> RedisProcess:
        port = self.primary_port()
        return self.primary if port == self.primary.port else self.replica

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        deadline = time.monotonic() + 30
        while self.replica.command("INFO", "replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync with the primary")
            time.sleep(0.1)
        self.wait_writable(self.primary, deadline)
        self.sentinel.start()
        while self.sentinel.command("INFO", "sentinel").get("master0", {}).get("slaves") != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not discover the replica")
            time.sleep(0.1)

    def wait_writable(self, primary: RedisProcess, deadline: float) -> None:
        """Wait until ``primary`` counts its replica as good: with
        ``min-replicas-to-write 1`` it refuses writes (NOREPLICAS) until the replica's
        first acknowledgement, which a loaded machine can delay past a sync."""
        while int(primary.command("INFO", "replication").get("min_slaves_good_slaves", 0)) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the primary has no good replica: it refuses writes")
            time.sleep(0.1)

    def failover(self, timeout: float = 30.0) -> int:
        """``SENTINEL FAILOVER`` and wait until the Sentinel names the new primary (its port)."""
        before = self.primary_port()
        self.sentinel.command("SENTINEL", "FAILOVER", self.service)
        deadline = time.monotonic() + timeout
        while (after := self.primary_port()) == before:
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not fail over")
            time.sleep(0.05)
        return after

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.primary):
            proc.stop()


# -- a private PgBouncer in transaction pooling mode -----------------------------------


class PgBouncerService:
    """Debian's ``pgbouncer`` on a free loopback port, in transaction pooling mode, in
    front of the test PostgreSQL (trust auth): ``url(schema)`` goes through it."""

    def __init__(self, folder: Path) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.user: str | None = None
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: it runs as postgres (or nobody), from a
            # folder of its own that user can write (pytest's are private to root).
            import pwd
            import tempfile

            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    self.user = name
                    break
            folder = Path(tempfile.mkdtemp(prefix="conveyor-pgbouncer-"))
            os.chmod(folder, 0o755)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        self.folder = folder
        self.port = free_port()
        self.target = conninfo_to_dict(POSTGRES_URL)
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, schema: str) -> str:
        user = self.target.get("user", "postgres")
        return f"postgresql://{user}@127.0.0.1:{self.port}/{self.target.get('dbname', 'test')}?schema={schema}"

    def start(self) -> None:
        host = self.target.get("host", "127.0.0.1")
        port = self.target.get("port", "5432")
        dbname = self.target.get("dbname", "test")
        user = self.target.get("user", "postgres")
        (self.folder / "users.txt").write_text(f'"{user}" ""\n')
        conf = self.folder / "pgbouncer.ini"
        conf.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"{dbname} = host={host} port={port} dbname={dbname}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    f"unix_socket_dir = {self.folder}",
                    "auth_type = trust",
                    f"auth_file = {self.folder / 'users.txt'}",
                    "pool_mode = transaction",
                    "default_pool_size = 20",
                    "max_client_conn = 500",
                    f"logfile = {self.folder / 'log.txt'}",
                    f"pidfile = {self.folder / 'pgbouncer.pid'}",
                ]
            )
            + "\n"
        )
        with (self.folder / "out.txt").open("ab") as out:
            user = ["-u", self.user] if self.user else []
            self.proc = subprocess.Popen([_binary("pgbouncer"), *user, str(conf)], stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {(self.folder / 'out.txt').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start within 20s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.user is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running(service: RedisClusterService | RedisSentinelService | PgBouncerService, what: str) -> Iterator[None]:
    """Start ``service`` (failing in CI, skipping elsewhere, when it cannot start), stop it after."""
    try:
        service.start()
    except Exception as exc:
        service.stop()
        unavailable(what, exc)
    try:
        yield
    finally:
        service.stop()
