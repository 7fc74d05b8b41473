"""Keeps the developer's CONVEYOR_* environment out of the tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_conveyor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CONVEYOR_") and not key.startswith("CONVEYOR_TEST_"):
            monkeypatch.delenv(key, raising=False)
