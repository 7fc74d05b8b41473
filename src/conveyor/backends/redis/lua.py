"""The Lua scripts of the Redis backend (``scripts/*.lua``), built once per process.

Each script is its body with, prepended, the ``_lib.lua`` helpers it uses, and its key
calls written out (``keys.lua_with_keys``). redis-py runs them (``register_script``: EVALSHA,
loaded again on NOSCRIPT). Imports nothing from conveyor but ``keys``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from conveyor.backends.redis.keys import LUA_COMMENT, lua_with_keys


def _read(name: str) -> str:
    return resources.files("conveyor.backends.redis").joinpath("scripts", f"{name}.lua").read_text("utf-8")


def _lib_chunks() -> list[tuple[str, str]]:
    """``_lib.lua`` cut into (defined name, text) chunks, one per top-level ``local``,
    each with the comment lines just above it (the file's opening comment, followed by a
    blank line, is a chunk of its own, with no name)."""
    chunks: list[tuple[str, str]] = []
    name = ""
    lines: list[str] = []
    comments: list[str] = []
    for line in _read("_lib").splitlines(keepends=True):
        if line.startswith("--"):
            comments.append(line)
            continue
        match = re.match(r"local (?:function )?(\w+)", line)
        if match:
            chunks.append((name, "".join(lines)))
            name, lines = match.group(1), []
        lines += comments
        lines.append(line)
        comments = []
    chunks.append((name, "".join(lines + comments)))
    return chunks


def _code(lua: str) -> str:
    """``lua`` without its comments: a helper named in a comment is not used."""
    return LUA_COMMENT.sub("", lua)


class Script:
    """One Lua script: the shared helpers it uses, then its body, its key calls written out.

    Only what the body needs (transitively) is prepended: every ``local function`` is a
    closure created on each call, a measurable share of a small script's run time.
    """

    def __init__(self, name: str, lib: list[tuple[str, str]]) -> None:
        body = _read(name)
        needed = _code(body)
        used: set[str] = set()
        changed = True
        while changed:
            changed = False
            for defined, text in lib:
                if defined and defined not in used and re.search(rf"\b{defined}\b", needed):
                    used.add(defined)
                    needed += _code(text)
                    changed = True
        helpers = "".join(text for defined, text in lib if not defined or defined in used)
        self.name = name
        self.text = lua_with_keys(helpers + body)


@functools.cache
def scripts() -> dict[str, Script]:
    """Every script by name, built on first use."""
    lib = _lib_chunks()
    names = [
        "enqueue", "claim", "finish", "heartbeat", "apply", "expired", "prune", "next_run_at",
        "list_jobs", "stats", "save_schedule", "schedules", "fire_schedule", "workers", "leader", "migrate",
        "count_finished",
    ]  # fmt: skip
    return {name: Script(name, lib) for name in names}
