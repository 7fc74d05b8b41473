"""The CLI's common options in process (click's runner): ``--url`` and ``--json`` before or
after any command, and every ``conveyor`` command line of the README and docs parses."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from conveyor import Conveyor
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


# -- enqueue's output, list filters, update, run-now, schedules run ------------------------


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), prog_name="conveyor")
    return result


def test_enqueue_prints_the_job_as_json_with_or_without_the_flag(db: str) -> None:
    plain = invoke("enqueue", "t", '{"a": 1}', "--url", db)
    assert plain.exit_code == 0, plain.output
    job = json.loads(plain.stdout)
    assert (job["topic"], job["payload"], job["status"], len(job["id"])) == ("t", {"a": 1}, "pending", 36)
    assert len(plain.stdout.splitlines()) == 1
    full = json.loads(invoke("enqueue", "t", "--delay", "1h", "--url", db, "--json").stdout)
    assert full["topic"] == "t" and full["status"] == "pending" and full["next_run_in"]


@pytest.mark.parametrize("args", [["jobs", "--json", "list"], ["schedules", "--json", "list"], ["--json", "stats"]])
def test_json_is_accepted_after_a_group_too(db: str, args: list[str]) -> None:
    # SPEC: --url and --json are accepted after the subcommand too.
    invoke("enqueue", "t", "--url", db)
    result = invoke(*args, "--url", db)
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), dict)


def test_enqueue_with_a_held_unique_key_says_the_existing_job_was_returned(db: str) -> None:
    first = invoke("enqueue", "t", "--unique-key", "k1", "--url", db)
    again = invoke("enqueue", "t", "--unique-key", "k1", "--url", db)
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout  # the same job
    assert "note:" not in first.stderr
    assert "already holds unique key 'k1'" in again.stderr and "no new job" in again.stderr


@pytest.mark.parametrize(("alias", "state"), [("running", "processing"), ("success", "completed")])
def test_jobs_list_takes_the_status_aliases_of_the_http_api(db: str, alias: str, state: str) -> None:
    job_id = json.loads(invoke("enqueue", "t", "--url", db).stdout)["id"]
    if state == "completed":
        with Conveyor(db) as app:
            app.complete(job_id, None)
    result = invoke("jobs", "list", "--status", alias, "--url", db, "--json")
    assert result.exit_code == 0, result.output
    assert [j["status"] for j in json.loads(result.stdout)["items"]] == ([state] if state == "completed" else [])


def test_jobs_list_limit_is_the_http_apis_1_to_100(db: str) -> None:
    assert invoke("jobs", "list", "--limit", "100", "--url", db).exit_code == 0
    for bad in ("101", "0"):
        result = invoke("jobs", "list", "--limit", bad, "--url", db)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: Invalid value for '--limit': must be between 1 and 100")


def test_jobs_update_changes_a_pending_job(db: str) -> None:
    job_id = json.loads(invoke("enqueue", "t", '{"v": 1}', "--delay", "1h", "--url", db).stdout)["id"]
    result = invoke(
        "jobs",
        "update",
        job_id,
        "--payload",
        '{"v": 2}',
        "--priority",
        "9",
        "--max-retries",
        "0",
        "--url",
        db,
        "--json",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["payload"], job["priority"], job["max_retries"]) == ({"v": 2}, 9, 0)
    nothing = invoke("jobs", "update", job_id, "--url", db)
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr


def test_jobs_run_now_makes_a_delayed_job_due(db: str) -> None:
    job_id = json.loads(invoke("enqueue", "t", "--delay", "1h", "--url", db).stdout)["id"]
    result = invoke("jobs", "run-now", job_id, "--url", db)
    assert result.exit_code == 0, result.output
    assert "due now" in result.stdout
    with Conveyor(db) as app:
        job = app.get(job_id)
        assert job.run_at <= job.updated_at


def test_schedules_run_enqueues_one_job_of_the_schedule_now(db: str) -> None:
    assert invoke("schedules", "add", "nightly", "0 3 * * *", "report", '{"k": 1}', "--url", db).exit_code == 0
    result = invoke("schedules", "run", "nightly", "--url", db, "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["topic"], job["payload"], job["schedule"], job["status"]) == ("report", {"k": 1}, "nightly", "pending")
    missing = invoke("schedules", "run", "nope", "--url", db)
    assert missing.exit_code == 1 and "nope" in missing.stderr
