"""The PostgreSQL migration runner: applies the missing files of ``migrations/`` to a
schema, one migrator at a time.

Imports only ``conveyor.core`` and this package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from conveyor.backends.postgres.rows import Migration

logger = logging.getLogger("conveyor.backends.postgres")


async def apply_migrations(
    conn: psycopg.AsyncConnection[Any],
    migrations: Sequence[Migration],
    *,
    schema: str,
    jobs_channel: str,
    sql: Callable[[str], str],
) -> int:
    """Applies what is missing through ``conn`` (autocommit) and returns how many
    migrations it applied. ``sql`` renders a named query for the schema."""
    # Fast path without the lock or any DDL: already up to date.
    try:
        cur = await conn.cursor(row_factory=dict_row).execute(sql("migrate_applied"))
        done = {row["version"] for row in await cur.fetchall()}
    except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName):
        done = set()
    if all(m.version in done for m in migrations):
        return 0
    applied = 0
    async with conn.transaction():
        # Serialises concurrent migrators; the loser re-reads and finds nothing to do.
        await conn.execute(sql("migrate_lock"), {"schema": schema})
        await conn.execute(sql("migrate_create_schema"))
        await conn.execute(sql("migrate_create_table"))
        cur = await conn.cursor(row_factory=dict_row).execute(sql("migrate_applied"))
        done = {row["version"] for row in await cur.fetchall()}
        for m in migrations:
            if m.version in done:
                continue
            await conn.execute(sql("migrate_set_path"))
            script = m.sql.replace("__JOBS_CHANNEL__", jobs_channel.replace("'", "''"))
            await conn.execute(script.encode())
            await conn.execute(sql("migrate_record"), {"version": m.version, "name": m.name})
            applied += 1
            logger.info("applied PostgreSQL migration %04d_%s in schema %s", m.version, m.name, schema)
    return applied
