"""The PostgreSQL backend's async connections: a psycopg pool, one connection kept
checked out beside it, and a pool check after a connection failure.

Imports only this package. Driver errors are left to the caller (the backend
translates them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from conveyor.backends.postgres.rows import RawJsonLoader

logger = logging.getLogger("conveyor.backends.postgres")

AsyncConn = psycopg.AsyncConnection[DictRow]

# At most one pool check a second after connection failures.
CHECK_INTERVAL = 1.0


async def reached_directly(conn: AsyncConn) -> bool:
    """Whether ``conn`` has a server session of its own rather than one lent per
    transaction by a pooler (PgBouncer in transaction mode, pgcat, Odyssey): the backend
    process the server says runs our statements is the one it named when we connected
    (a pooler that lends server connections sends its own cancel key, with a made-up
    process id, and keeps no session for us: no LISTEN, no prepared statements). A plain
    TCP proxy or NAT passes the server's own key: the session is ours, so it counts as
    direct. (Comparing client ports instead failed by chance when the pooler's own
    connection to the server got the same ephemeral port as ours, and wrongly under NAT.)"""
    cur = await conn.execute("SELECT pg_backend_pid() AS pid")
    row = await cur.fetchone()
    return row is not None and row["pid"] == conn.info.backend_pid


async def _configure(conn: AsyncConn) -> None:
    conn.adapters.register_loader("json", RawJsonLoader)
    # Timestamps then load as UTC datetimes as they are (psycopg maps the session time
    # zone "UTC" to datetime.UTC): no conversion of the twelve times of every job row
    # read (worker CPU 70 -> 56 µs a job in a drain, bench/README.md). TimeZone is a parameter that
    # PgBouncer keeps per client and restores on every server connection it lends, so
    # this SET holds behind it too; where it does not, rows.utc() converts.
    await conn.execute("SET TimeZone TO 'UTC'")


class Connections:
    """A pool of autocommit connections (rows as dicts) with server-side prepared statements, and one
    "hot" connection kept checked out for whoever comes when it is free: a pool round
    (getconn + putconn with its checks) costs more than a short statement."""

    def __init__(
        self, conninfo: str, connect_kwargs: dict[str, Any], *, min_size: int, max_size: int, timeout: float, name: str
    ) -> None:
        self._conninfo = conninfo
        self._kwargs = connect_kwargs
        self._min, self._max = min_size, max(max_size, min_size)
        self.timeout = timeout
        self._name = name
        # Server-side prepared statements (psycopg's prepare_threshold 0: from the first
        # execution), off behind a pooler that does not keep them (see docs/postgres.md).
        self.prepare = True
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._hot: AsyncConn | None = None
        self._hot_busy = False
        self._last_check = 0.0
        self._check: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        # Callers inside connection(), and an event set whenever there are none.
        self._borrowers = 0
        self._unborrowed = asyncio.Event()
        self._unborrowed.set()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def open(self, connect_timeout: float) -> None:
        """Open the pool and wait for its first connections (raises the driver's error)."""
        pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            self._conninfo,
            min_size=self._min,
            max_size=self._max,
            kwargs={
                "autocommit": True,
                "prepare_threshold": 0 if self.prepare else None,
                "row_factory": dict_row,
                **self._kwargs,
            },
            configure=_configure,
            open=False,
            timeout=self.timeout,
            name=self._name,
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._guard = asyncio.get_running_loop().create_task(self._close_when_cancelled(), name=f"{self._name}-guard")

    async def _close_when_cancelled(self) -> None:
        """Wait until cancelled; then, once no caller holds a connection, close the
        psycopg pool. An app that never calls close() has its tasks cancelled at the
        end of ``asyncio.run`` (or of the sync facade's loop). A psycopg_pool worker
        task cancelled while it opens a connection (the replacement of one a cancelled
        query broke) catches the cancellation (psycopg_pool 3.3 counts it as a failed
        attempt) and then waits for its next maintenance task for ever, so the loop's
        shutdown, which waits for every cancelled task, would never end; closing the
        pool sends each worker the stop it waits for. The callers, cancelled too, leave
        first: one waiting for a connection must get its cancellation, not PoolClosed.
        ``self`` stays open: a connection asked for afterwards is refused
        (``PoolClosed``) rather than opening a new pool on a loop about to close."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pool = self._pool
            if self._guard is asyncio.current_task() and pool is not None:
                self._guard = None
                await self._unborrowed.wait()
                await self._close_pool(pool)
            raise

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncConn]:
        pool = self._pool
        assert pool is not None, "open() first"
        timeout = timeout or self.timeout
        self._borrowers += 1
        self._unborrowed.clear()
        try:
            if self._hot_busy:
                async with pool.connection(timeout=timeout) as conn:
                    yield conn
                return
            self._hot_busy = True
            hot = self._hot
            healthy = False
            try:
                if hot is None:
                    hot = self._hot = await pool.getconn(timeout=timeout)
                yield hot
                healthy = not hot.closed and hot.info.transaction_status == TransactionStatus.IDLE
            finally:
                self._hot_busy = False
                if hot is not None and (not healthy or self._hot is not hot):
                    # Failed or left mid-transaction (or closed meanwhile): the pool checks it
                    # and replaces it if broken (closes it once the pool is closed).
                    self._hot = None
                    with contextlib.suppress(Exception):
                        await pool.putconn(hot)
        finally:
            self._borrowers -= 1
            if not self._borrowers:
                self._unborrowed.set()

    def lost(self) -> None:
        """A connection failed: idle pooled connections are probably dead too (a server
        restart), so have the pool test and replace them now rather than failing one
        caller per dead connection."""
        pool = self._pool
        now = time.monotonic()
        if pool is None or now - self._last_check < CHECK_INTERVAL:
            return
        if self._check is not None and not self._check.done():
            return
        try:
            self._check = asyncio.get_running_loop().create_task(self._check_pool(pool))
        except RuntimeError:  # no running loop (the sync facade's thread): the next async failure checks
            return
        self._last_check = now

    @staticmethod
    async def _check_pool(pool: AsyncConnectionPool[AsyncConn]) -> None:
        try:
            await pool.check()
        except Exception as exc:
            logger.debug("pool check failed: %s", exc)

    async def close(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:  # cancelled by us: it sees _guard cleared and closes nothing
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
        check, self._check = self._check, None
        if check is not None:
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._close_pool(pool)

    async def _close_pool(self, pool: AsyncConnectionPool[AsyncConn]) -> None:
        hot, self._hot = self._hot, None
        if hot is not None and not self._hot_busy:
            with contextlib.suppress(Exception):
                await pool.putconn(hot)
        await pool.close()
