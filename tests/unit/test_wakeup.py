"""LocalWakeup and hand_over: in-process wake-ups, without a store."""

from __future__ import annotations

import asyncio
import threading

from conveyor.backends.wakeup import LocalWakeup, hand_over


async def test_a_wait_times_out_without_a_notify() -> None:
    assert await LocalWakeup().wait(0.01) is False


async def test_a_notify_wakes_every_waiter_at_once() -> None:
    wakeup = LocalWakeup()
    waiters = [asyncio.create_task(wakeup.wait(5.0)) for _ in range(3)]
    await asyncio.sleep(0)
    wakeup.notify()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1.0) == [True, True, True]


async def test_a_notify_while_nobody_waits_is_kept_for_the_next_wait_only() -> None:
    wakeup = LocalWakeup()
    wakeup.notify()
    assert await wakeup.wait(5.0) is True  # at once
    assert await wakeup.wait(0.01) is False  # consumed


async def test_a_cancelled_wait_leaves_no_waiter_behind() -> None:
    wakeup = LocalWakeup()
    task = asyncio.create_task(wakeup.wait(5.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    wakeup.notify()  # nobody waits: kept
    assert await wakeup.wait(0.01) is True


async def test_hand_over_from_a_thread_delivers_and_wakes_in_one_call() -> None:
    loop = asyncio.get_running_loop()
    wakeup = LocalWakeup()
    got: list[list[int]] = []
    waiter = asyncio.create_task(wakeup.wait(5.0))
    await asyncio.sleep(0)
    thread = threading.Thread(target=hand_over, args=(loop, wakeup, got.append, [1, 2]))
    thread.start()
    assert await asyncio.wait_for(waiter, 1.0) is True
    thread.join()
    assert got == [[1, 2]]


async def test_hand_over_does_nothing_when_nobody_listens() -> None:
    loop = asyncio.get_running_loop()
    wakeup = LocalWakeup()  # never waited on, no subscribers
    calls: list[object] = []
    original = loop.call_soon_threadsafe
    loop.call_soon_threadsafe = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
    try:
        hand_over(loop, wakeup, None, [1])
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert calls == []
