"""A warning, once per topic and process, when jobs are enqueued for a topic that no
live worker handles: they would wait silently until a worker for it starts (a typo in
a topic, a worker started with ``--topics``, a handler not deployed yet).

The check runs off the enqueue's path: the first enqueue of each topic starts one
read of the live-worker registry in the background. Imports only ``conveyor.core``
and ``conveyor.backends.base``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable

from conveyor.backends.base import WorkerInfo
from conveyor.core.errors import ConveyorError

logger = logging.getLogger("conveyor")


class UnhandledTopics:
    """Remembers the topics already checked in this process.

    Args:
        workers: the live workers of the store (one registry read).
        local_topics: topics this process's own worker handles (it may not have
            registered yet).
    """

    def __init__(
        self, workers: Callable[[], Awaitable[list[WorkerInfo]]], local_topics: Callable[[], set[str]]
    ) -> None:
        self._workers = workers
        self._local_topics = local_topics
        self._checked: set[str] = set()
        self._lock = threading.Lock()  # enqueues of the sync facade come from any thread
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueued(self, topics: Iterable[str], *, from_loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Jobs of ``topics`` were stored: check the topics not checked yet. On the loop's
        thread, or from another thread with ``from_loop``."""
        new = set(topics) - self._checked
        if not new:
            return  # the usual case: one set difference per enqueue
        with self._lock:
            new -= self._checked
            self._checked |= new
        if not new:
            return
        if from_loop is None:
            self._start(new)
        else:
            from_loop.call_soon_threadsafe(self._start, new)

    def _start(self, topics: set[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._check(topics), name="conveyor-topic-check")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, topics: set[str]) -> None:
        try:
            workers = await self._workers()
        except ConveyorError:
            with self._lock:
                self._checked -= topics  # the store is down: check again at the next enqueue
            return
        handled = {t for w in workers for t in w.topics} | self._local_topics()
        for topic in sorted(topics - handled):
            logger.warning(
                "no live worker handles topic %s: its jobs wait until a worker for it starts",
                topic,
                extra={"event": "topic_without_worker", "topic": topic},
            )

    async def wait(self, timeout: float = 2.0) -> None:
        """Let the checks under way finish (``close()`` calls this: a script that
        enqueues and exits still gets its warning)."""
        if self._tasks:
            await asyncio.wait(tuple(self._tasks), timeout=timeout)
