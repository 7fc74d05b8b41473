"""What a fresh clone needs beside the code: a license matching the package metadata, a
changelog, and a ``make run`` that installs only what running needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_target(name: str) -> tuple[list[str], list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    text = (REPO / "Makefile").read_text()
    match = re.search(rf"^{re.escape(name)}:([^\n]*)\n((?:\t[^\n]*\n)*)", text, flags=re.M)
    assert match, f"no target {name}"
    return match.group(1).split(), [line.strip() for line in match.group(2).splitlines()]


def test_license_file_matches_the_package_metadata() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text


def test_changelog_has_an_unreleased_section_above_the_released_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    unreleased, released = text.find("## Unreleased"), text.find(f"## {version}")
    assert 0 < unreleased < released


def test_make_run_installs_only_what_running_needs() -> None:
    prerequisites, _ = make_target("run")
    seen, pending = set(), list(prerequisites)
    installs: list[str] = []
    while pending:
        target = pending.pop()
        if target in seen or target.startswith("$("):
            continue
        seen.add(target)
        deps, recipe = make_target(target)
        pending += deps
        installs += [line for line in recipe if "pip install" in line]
    assert installs, "make run installs nothing"
    assert not any("dev]" in line or "all]" in line for line in installs), installs
    assert any("[api]" in line for line in installs), installs


def test_make_test_makes_sure_the_services_are_there() -> None:
    _, recipe = make_target("test")
    assert recipe[0] == "bash scripts/ensure-services.sh"
    script = (REPO / "scripts" / "ensure-services.sh").read_text()
    for package in ("postgresql", "redis-server", "chromium"):
        assert re.search(rf"apt_install [^\n]*\b{package}\b", script), package
