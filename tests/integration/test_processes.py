"""Real worker processes against one store of each kind: exactly-once across processes,
a worker killed mid-job, and a paused worker that must not overwrite its successor.

The scenarios live in ``_workers`` so the Redis and PostgreSQL files run the same ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.integration._workers import (
    check_exactly_once,
    check_killed_worker_recovered,
    check_leader_takeover,
    check_paused_worker_fenced,
)

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


def test_four_worker_processes_run_every_job_exactly_once(store_url: str, tmp_path: Path) -> None:
    check_exactly_once(store_url, tmp_path / "ledger.txt", 2000, timeout=120)


def test_a_killed_worker_s_job_is_completed_by_another_after_the_lease(store_url: str, tmp_path: Path) -> None:
    check_killed_worker_recovered(store_url, tmp_path / "ledger.txt")


def test_a_paused_worker_cannot_overwrite_the_result_of_its_successor(store_url: str, tmp_path: Path) -> None:
    check_paused_worker_fenced(store_url, tmp_path / "ledger.txt")


def test_killing_the_maintenance_leader_hands_maintenance_to_another_worker(store_url: str, tmp_path: Path) -> None:
    check_leader_takeover(store_url, tmp_path / "ledger.txt")
