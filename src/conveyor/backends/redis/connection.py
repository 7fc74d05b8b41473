"""A lean, pipelined RESP connection for the Redis backend's commands.

Imports nothing from conveyor. Why not redis-py's asyncio client for commands: each
call there costs a pool checkout, a retry wrapper, Python-level packing of every
argument and a StreamReader read, several times the cost of the round trip itself on
a small job. Here one connection is shared by every coroutine of the process: a call
packs its command with hiredis, writes it and awaits a future that ``data_received``
resolves in order (Redis answers in order), so concurrent calls pipeline naturally.
redis-py is still used for pub/sub (``pubsub.py``), where it earns its keep.

Failure model: any connection problem fails every call in flight with
``ConnectionError`` and the next call reconnects; nothing is retried here, because a
state change whose reply was lost must not run twice behind the caller's back. A
call waiting longer than ``command_timeout`` aborts the connection (a watchdog checks
once a second, so the hot path arms no timer).
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """An error reply from Redis (the command ran and failed, or was refused)."""

    @property
    def noscript(self) -> bool:
        return str(self).startswith("NOSCRIPT")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        path = parts.path.lstrip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
        )


def no_delay(transport: asyncio.Transport) -> None:
    """Send small commands at once (no Nagle delay): every call is a round trip."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


POLL_BUDGET = 0.0002  # s: how long a call polls for its reply before sleeping
POLL_PAUSE = 64  # calls that sleep at once after a reply that came later than that


class PollPacer:
    """Whether a call polls for its reply before sleeping: yes, up to ``POLL_BUDGET``,
    until a reply comes later than that (a remote or busy Redis); then not for the next
    ``POLL_PAUSE`` calls, so polling burns no CPU where it does not pay."""

    __slots__ = ("pause",)

    def __init__(self) -> None:
        self.pause = 0  # calls left that sleep for their reply at once

    def deadline(self) -> float | None:
        """Until when this call polls (``time.perf_counter()``), or None: it sleeps."""
        if self.pause:
            self.pause -= 1
            return None
        return time.perf_counter() + POLL_BUDGET

    def late(self) -> None:
        self.pause = POLL_PAUSE


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        no_delay(transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(ConnectionError(f"Redis protocol error: {exc}"))
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                return
            if not waiters:
                continue  # a reply nobody waits for (its caller was cancelled): skip it
            fut = waiters.popleft()[0]
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(RespError(str(reply)))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, exc: Exception) -> None:
        while self.waiters:
            fut = self.waiters.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionError("connection to Redis is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport.write(hiredis.pack_command(args))
        self.waiters.append((fut, time.monotonic()))
        return fut


class RespConnection:
    """One shared connection; (re)connects on first use after a loss."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 5.0, command_timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._proto: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._pacer = PollPacer()

    async def execute(self, *args: Any, poll: bool = False) -> Any:
        """Send one command and return its reply.

        ``poll``: when this is the only command in flight, keep the event loop turning
        (other tasks still run) instead of letting it sleep in epoll until the reply,
        for up to ``POLL_BUDGET``: the wake-up from that sleep costs about as much as a
        nearby Redis takes to answer. For a caller awaiting one command after another
        (an ``enqueue`` loop); after a reply later than the budget, the next
        ``POLL_PAUSE`` polled calls sleep at once (``PollPacer``).

        Raises:
            RespError: Redis answered with an error.
            ConnectionError, OSError, TimeoutError: no answer (the command may have run).
        """
        proto = self._proto
        if proto is None or proto.transport is None or self._loop is not asyncio.get_running_loop():
            proto = await self._connect()
        fut = proto.send(args)
        if poll and len(proto.waiters) == 1 and (deadline := self._pacer.deadline()) is not None:
            while not fut.done():
                if time.perf_counter() >= deadline:
                    self._pacer.late()
                    break
                await asyncio.sleep(0)
        return await fut

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands at once; return each reply or ``RespError``."""
        proto = self._proto
        if proto is None or proto.transport is None or self._loop is not asyncio.get_running_loop():
            proto = await self._connect()
        futures = [proto.send(cmd) for cmd in commands]
        out: list[Any] = []
        for fut in futures:
            try:
                out.append(await fut)
            except RespError as exc:
                out.append(exc)
        return out

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pid != os.getpid():
            # Another event loop (or a forked child): the old transport belongs to a
            # loop we must not touch; drop it without closing it from here.
            self._proto, self._connecting, self._watchdog = None, None, None
            self._loop, self._pid = loop, os.getpid()
        if self._proto is not None and self._proto.transport is not None:
            return self._proto
        if self._connecting is None or self._connecting.done():
            self._connecting = loop.create_future()
            pending = self._connecting
            try:
                proto = await asyncio.wait_for(self._open(loop), self.connect_timeout)
            except BaseException as exc:
                self._connecting = None
                if not pending.done():
                    pending.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
                    pending.exception()  # retrieved: no "never retrieved" warning
                raise
            self._proto = proto
            pending.set_result(proto)
            self._arm_watchdog()
            return proto
        return await asyncio.shield(self._connecting)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        ep = self.endpoint
        context = ssl.create_default_context() if ep.tls else None
        _, proto = await loop.create_connection(_Protocol, ep.host, ep.port, ssl=context)
        try:
            if ep.password is not None:
                auth = ("AUTH", ep.username, ep.password) if ep.username else ("AUTH", ep.password)
                await proto.send(auth)
            if ep.db:
                await proto.send(("SELECT", ep.db))
        except BaseException:
            if proto.transport is not None:
                proto.transport.close()
            raise
        return proto

    def _arm_watchdog(self) -> None:
        if self._loop is None:
            return
        self._watchdog = self._loop.call_later(1.0, self._check)

    def _check(self) -> None:
        proto = self._proto
        if proto is None or proto.transport is None:
            self._watchdog = None
            return
        if proto.waiters and time.monotonic() - proto.waiters[0][1] > self.command_timeout:
            proto.transport.abort()  # fails every waiter; the next call reconnects
            self._watchdog = None
            return
        self._arm_watchdog()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proto, self._proto = self._proto, None
        if proto is None or self._pid != os.getpid():
            return
        if proto.transport is not None:
            try:
                same_loop = self._loop is asyncio.get_running_loop()
            except RuntimeError:
                same_loop = False
            if not same_loop:
                return
            proto.transport.close()
            await asyncio.wait_for(asyncio.shield(proto.lost), 5.0)


class BlockingConnection:
    """A blocking twin of ``RespConnection`` for callers outside the event loop (the sync
    facade's ``enqueue_blocking``): one socket behind a lock, hiredis on both ends.
    Same failure model: a broken socket fails the call and the next one reconnects."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 5.0, command_timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._pid = os.getpid()
        # An SSL socket takes no recv() flags; Windows has no MSG_DONTWAIT.
        self._can_poll = not endpoint.tls and hasattr(socket, "MSG_DONTWAIT")
        self._pacer = PollPacer()

    def execute(self, *args: Any) -> Any:
        with self._lock:
            if self._sock is None or self._pid != os.getpid():
                self._sock = None
                self._open()
            sock = self._sock
            assert sock is not None
            try:
                sock.sendall(hiredis.pack_command(args))
                reply = self._read(sock)
            except BlockingIOError as exc:  # the kernel's send/receive timeout ran out
                self._drop()
                raise TimeoutError(f"Redis did not answer within {self.command_timeout:g}s") from exc
            except BaseException:
                self._drop()
                raise
        if isinstance(reply, hiredis.ReplyError):
            raise RespError(str(reply))
        return reply

    def _read(self, sock: socket.socket) -> Any:
        reader = self._reader
        if self._can_poll and (deadline := self._pacer.deadline()) is not None:
            reply = self._poll(sock, reader, deadline)
            if reply is not False:
                return reply
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection to Redis lost: closed")
            reader.feed(data)

    def _poll(self, sock: socket.socket, reader: hiredis.Reader, deadline: float) -> Any:
        """The reply if it arrives by ``deadline``, else False.

        A nearby Redis answers a small command in tens of µs, and sleeping in recv()
        adds a scheduler wake-up of about as much again to every call (measured on a
        2-CPU VM: PING 50 µs sleeping, 20 µs polling). A caller of the sync facade waits
        for this reply anyway, so a short bounded poll trades a little CPU for half the
        round trip; ``PollPacer`` stops polling where it does not pay."""
        while True:
            try:
                data = sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() < deadline:
                    continue
                self._pacer.late()
                return False
            if not data:
                raise ConnectionError("connection to Redis lost: closed")
            reader.feed(data)
            reply = reader.gets()
            if reply is not False:
                return reply

    def _open(self) -> None:
        ep = self.endpoint
        sock = socket.create_connection((ep.host, ep.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ep.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=ep.host)
        # The timeout is the kernel's (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket: a
        # Python-level timeout would poll() before every send and receive, doubling the
        # system calls of each enqueue.
        # (TLS keeps Python's timeout: an SSL socket does not expect EAGAIN when blocking.)
        if ep.tls:
            sock.settimeout(self.command_timeout)
        else:
            sock.settimeout(None)
            seconds = int(self.command_timeout)
            timeval = struct.pack("ll", seconds, int((self.command_timeout - seconds) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self._sock, self._reader, self._pid = sock, hiredis.Reader(), os.getpid()
        try:
            if ep.password is not None:
                auth: tuple[Any, ...] = ("AUTH", ep.username, ep.password) if ep.username else ("AUTH", ep.password)
                sock.sendall(hiredis.pack_command(auth))
                if isinstance(reply := self._read(sock), hiredis.ReplyError):
                    raise RespError(str(reply))
            if ep.db:
                select: tuple[Any, ...] = ("SELECT", ep.db)
                sock.sendall(hiredis.pack_command(select))
                if isinstance(reply := self._read(sock), hiredis.ReplyError):
                    raise RespError(str(reply))
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self._pid == os.getpid():
            sock.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
