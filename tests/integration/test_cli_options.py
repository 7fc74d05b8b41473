"""The CLI's common options in process (click's runner): ``--url`` and ``--json`` before or
after any command, and every ``conveyor`` command line of the README and docs parses."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conveyor.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def leaf_paths(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from leaf_paths(command, ctx, (*prefix, name))


def all_command_paths() -> list[tuple[str, ...]]:
    with click.Context(cli) as ctx:
        return list(leaf_paths(cli, ctx))


def parse(args: list[str]) -> click.Context:
    """Parse a command line down to its last command, as ``conveyor`` would, without
    running it (options, arguments and their callbacks included)."""
    ctx = cli.make_context("conveyor", list(args))
    while isinstance(ctx.command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        assert command is not None and name is not None
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_every_command_takes_url_after_its_name(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "--url" in result.output


def test_migrate_takes_url_after_the_command(tmp_path: Path) -> None:
    db = tmp_path / "after.db"
    result = CliRunner().invoke(cli, ["migrate", "--url", f"sqlite:///{db}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["url"] == f"sqlite:///{db}"
    assert db.exists()


def test_url_after_the_command_wins_over_one_before_it(tmp_path: Path) -> None:
    before, after = tmp_path / "before.db", tmp_path / "after.db"
    result = CliRunner().invoke(cli, ["--url", f"sqlite:///{before}", "migrate", "--url", f"sqlite:///{after}"])
    assert result.exit_code == 0, result.output
    assert after.exists() and not before.exists()


def test_json_before_or_after_the_command_prints_the_same(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    runner = CliRunner()
    first = runner.invoke(cli, ["--json", "jobs", "list", "--url", url])
    second = runner.invoke(cli, ["jobs", "list", "--url", url, "--json"])
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert json.loads(first.output)["items"] == json.loads(second.output)["items"] == []


def test_nested_group_takes_url_before_its_subcommand(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["jobs", "--url", f"sqlite:///{tmp_path}/n.db", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == 0


def test_a_misspelt_option_is_one_usage_line_naming_the_fix() -> None:
    result = CliRunner().invoke(cli, ["migrate", "--uri", "sqlite:///x.db"], prog_name="conveyor")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "--url" in lines[0] and "conveyor migrate --help" in lines[0]


def test_an_empty_url_after_the_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["stats", "--url", " "])
    assert result.exit_code == 2
    assert "--url" in result.output and "must not be empty" in result.output


def documented_command_lines() -> list[tuple[str, bool]]:
    """``conveyor ...`` lines of shell blocks (strict: they must run as written) and of
    inline code (a mention such as `conveyor worker` may leave out required arguments)
    in README.md and docs/; synopses with ``[optional]`` parts or ``a|b`` left out."""
    found: dict[str, bool] = {}
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("conveyor "):
                    found[line] = True
        for inline in re.findall(r"`(conveyor [^`]+)`", text):
            found.setdefault(inline.strip(), False)
    commands = {p[0] for p in all_command_paths()}
    return sorted(
        (line, strict)
        for line, strict in found.items()
        if "[" not in line and "|" not in line and "..." not in line and line.split()[1] in commands
    )


def test_the_docs_show_command_lines() -> None:
    assert sum(strict for _, strict in documented_command_lines()) >= 5


@pytest.mark.parametrize(("line", "strict"), documented_command_lines())
def test_every_documented_command_line_parses(line: str, strict: bool) -> None:
    args = shlex.split(line)[1:]
    try:
        ctx = parse(args)
    except click.MissingParameter:
        if strict:
            raise
        return
    assert not isinstance(ctx.command, click.Group), f"{line!r} names a group, not a command"
