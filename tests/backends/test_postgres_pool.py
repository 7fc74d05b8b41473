"""The PostgreSQL backend's connection pool at the end of an event loop that nobody
closed it on: ``asyncio.run`` cancels every task left, and the loop must end even when
the pool is opening a connection at that moment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import services

REPO = Path(__file__).resolve().parents[2]

# A TCP proxy in front of PostgreSQL that stops answering once `stall` is set: the
# pool's replacement for a broken connection then waits in its connection attempt when
# asyncio.run ends (psycopg_pool's worker catches the cancellation there, then waits
# for its next task for ever unless the pool is closed).
SCRIPT = """
import asyncio, sys
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from conveyor.backends.postgres.pool import Connections

URL = sys.argv[1]
TARGET = conninfo_to_dict(URL)
stall = False

async def relay(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def serve(reader, writer):
    try:
        if stall:
            await asyncio.get_running_loop().create_future()  # the connection attempt hangs
        upstream = (TARGET.get("host", "127.0.0.1"), int(TARGET.get("port", 5432)))
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
    except asyncio.CancelledError:
        writer.close()

async def main():
    global stall
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conninfo = make_conninfo(URL, host="127.0.0.1", port=port)
    conns = Connections(conninfo, {}, min_size=1, max_size=2, timeout=5.0, name="exit-test")
    await conns.open(connect_timeout=10)
    stall = True
    async with conns.connection() as conn:
        await conn.close()  # handed back broken: the pool opens a replacement
    await asyncio.sleep(0.3)
    print("connecting", flush=True)

asyncio.run(main())
print("ended", flush=True)
"""


def test_a_pool_never_closed_lets_asyncio_run_end_while_it_connects() -> None:
    services.check_postgres()
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), services.POSTGRES_URL],
            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"asyncio.run did not end: {exc.stdout!r} {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.split() == ["connecting", "ended"], done.stderr
