"""How the PostgreSQL backend runs its named queries: rendered once per schema, on the
pooled autocommit connections (rows as dicts, read by column name), with driver errors
translated to conveyor's, and the events waiting to ride along sent in the same
statement as the worker's next round trip.

Imports only ``conveyor.core`` and this package.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from conveyor.backends.postgres import queries as q
from conveyor.backends.postgres.outbox import RideAlong
from conveyor.backends.postgres.pool import AsyncConn, Connections
from conveyor.core.errors import BackendError, BackendUnavailable, ConveyorError, MigrationRequired

Params = Mapping[str, Any]


class Database:
    """The queries of one schema on one pool.

    Args:
        schema: the schema every query is rendered for.
        connections: the pool.
        connect: opens the store when a query finds the pool closed.
        events_channel: the NOTIFY channel of events.
    """

    def __init__(
        self, schema: str, connections: Connections, connect: Callable[[], Awaitable[None]], events_channel: str
    ) -> None:
        self.schema = schema
        self.connections = connections
        self._connect = connect
        self.events_channel = events_channel
        self._rendered: dict[str, str] = {}
        self.ride_along = RideAlong(self.publish_alone)
        self.closed = False

    def sql(self, query: str) -> str:
        """The named query (or a template in the same conventions) for this schema."""
        sql = self._rendered.get(query)
        if sql is None:
            sql = self._rendered[query] = q.render(q.QUERIES.get(query, query), self.schema)
        return sql

    @contextlib.contextmanager
    def translate(self) -> Iterator[None]:
        """Driver exceptions → conveyor errors (callers never see psycopg's)."""
        try:
            yield
        except ConveyorError:
            raise
        except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName) as exc:
            raise MigrationRequired(
                f"the conveyor tables are missing in schema {self.schema!r}; run `conveyor migrate`"
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            self.connections.lost()
            raise BackendUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL error: {exc}") from exc

    @contextlib.asynccontextmanager
    async def conn(self, timeout: float | None = None) -> AsyncIterator[AsyncConn]:
        if not self.connections.is_open:
            await self._connect()
        with self.translate():
            async with self.connections.connection(timeout) as conn:
                yield conn

    async def fetch(self, query: str, params: Params | None = None) -> list[DictRow]:
        async with self.conn() as conn:
            cur = await conn.execute(self.sql(query), params)
            return await cur.fetchall()

    async def execute(self, query: str, params: Params | None = None) -> None:
        async with self.conn() as conn:
            await conn.execute(self.sql(query), params)

    async def fetch_with_events(self, query: str, params: Params) -> list[DictRow]:
        """``fetch`` of a query that takes ``channel`` and ``events``: the events waiting
        to ride along go out with it, in the same statement."""
        box = self.ride_along.take()
        events = box.payloads if box is not None else []
        try:
            rows = await self.fetch(query, {**params, "channel": self.events_channel, "events": events})
        except Exception as exc:
            if box is not None:
                box.done(exc)
            raise
        if box is not None:
            box.done()
        return rows

    async def publish_alone(self, payloads: list[str]) -> None:
        if self.closed:  # close() sent what waited; a late timer must not reopen the store
            raise BackendUnavailable("the PostgreSQL store is closed")
        await self.execute("publish_events", {"channel": self.events_channel, "events": payloads})
