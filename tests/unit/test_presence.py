"""Publishers' reading of the event listener registry (``conveyor.backends.presence``):
how often a busy publisher asks, and what it answers meanwhile. A fake registry and a
fake monotonic clock; the stores' own registries are tested in
tests/backends/test_event_listeners.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from conveyor.backends.presence import HEARD_FOR, Presence


class Registry:
    """Answers ``anyone`` with ``listening`` and counts the readings."""

    def __init__(self, listening: bool) -> None:
        self.listening = listening
        self.readings = 0

    async def enter(self, listener_id: str, ttl: float) -> None:
        pass

    async def remove(self, listener_id: str) -> None:
        pass

    async def anyone(self) -> bool:
        self.readings += 1
        return self.listening


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("conveyor.backends.presence.time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


async def publish_for(p: Presence, clock: Clock, seconds: float, step: float = 0.005) -> list[bool]:
    """``heard`` asked every ``step`` seconds of the fake clock for ``seconds``, the
    loop turning between asks (so readings complete); its answers."""
    loop = asyncio.get_running_loop()
    answers = []
    end = clock.now + seconds
    while clock.now < end:
        answers.append(p.heard(loop))
        for _ in range(3):
            await asyncio.sleep(0)
        clock.now += step
    return answers


@pytest.mark.parametrize("listening", [False, True])
async def test_a_busy_publisher_reads_at_most_once_per_half_heard_for(clock: Clock, listening: bool) -> None:
    registry = Registry(listening)
    p = Presence(registry, [])
    answers = await publish_for(p, clock, seconds=10 * HEARD_FOR)
    assert answers[0] is True  # nothing read yet
    assert answers[1:] == [listening] * (len(answers) - 1)  # never a gap once answered
    assert registry.readings <= 2 * 10 + 1  # not one per publish (400 here)


async def test_an_answer_is_trusted_for_heard_for_from_when_it_was_asked_then_events_are_built(
    clock: Clock,
) -> None:
    registry = Registry(False)
    p = Presence(registry, [])
    loop = asyncio.get_running_loop()
    assert p.heard(loop) is True
    await asyncio.sleep(0)  # the reading: nobody
    assert p.heard(loop) is False
    # Nobody asks for a while: the answer runs out and the publisher builds events
    # again until a new reading says otherwise.
    clock.now += HEARD_FOR
    registry.listening = True
    assert p.heard(loop) is True
    await asyncio.sleep(0)
    assert p.heard(loop) is True and registry.readings == 2


async def test_own_subscribers_are_heard_without_reading(clock: Clock) -> None:
    registry = Registry(False)
    p = Presence(registry, ["a subscription"])
    assert p.heard(asyncio.get_running_loop()) is True
    await asyncio.sleep(0)
    assert registry.readings == 0
