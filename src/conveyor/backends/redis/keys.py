"""Every Redis key and channel name conveyor uses, built here and nowhere else.

Imports nothing from conveyor. Python code gets names from ``Keys``; the Lua scripts
get the same names from ``lua_with_keys()``, which writes out each script's key calls
(``k_job(id)``) from the one ``_LAYOUT`` table below, so a script never spells a key
itself.
The prefix is passed to every script as its one key, ``KEYS[1]`` (and again as
``ARGV[1]``, where the scripts' own arguments have always started after it): one
loaded script (one SHA) serves every prefix.

Layout (``P`` = prefix, default ``conveyor``; ``<s>`` a status, ``<t>`` a topic)::

    P:job:<id>           hash    the job record: a field per Job field the scripts read or an
                                 operation changes, the settings fixed at creation in one
                                 field ``fixed`` (layout 7); NULL and default values absent
                                 (``record.py``)
    P:ts:<s>:<t>         zset    ids in status s of topic t, score 0 (lexicographic = creation
                                 order)
    P:topics             set     topics that have (or had) jobs; pruned lazily by stats()
    P:ready:<t>          zset    due pending jobs of topic t (see "ordering" below)
    P:delayed:<t>        zset    pending jobs of topic t not yet promoted, score run_at (µs)
    P:processing         zset    processing ids, score locked_until (µs): expired() reads it
    P:finished:<s>       zset    ids finished in status s (completed, failed, cancelled) with a
                                 finished_at, score finished_at: prune() takes the oldest,
                                 count_finished() a ZCOUNT per bucket (layout 5; before, one
                                 P:finished for every status, whose counts read each job)
    P:unique             hash    "<topic>\0<unique_key>" → id of the active job holding it
                                 (keys are scoped per topic; layout 4)
    P:schedule:<name>    hash    a recurring schedule
    P:schedules          zset    schedule names, score 0 (lexicographic)
    P:worker:<id>        string  a live worker's registry entry (JSON)
    P:workers            zset    worker ids, score last heartbeat (µs)
    P:leader             string  the maintenance leader's worker id; its TTL is the lease
    P:version            string  storage layout version (set by migrate)
    P:wake               channel "new jobs may be due": published by every script that
                                 makes a job pending (enqueue, requeue, retry, update)
    P:events             channel job events (a JSON envelope per publish() call)
    P:listeners          zset    processes listening for events, score when the entry
                                 expires (µs): events are built only while one is live
                                 (``event_listeners.py``)

On a Cluster a PUBLISH reaches the subscribers of every node (over the cluster bus);
conveyor subscribes on the node owning the prefix's slot.

Listing. A job is in exactly one ``P:ts:<s>:<t>``, so a listing merges the indexes of
the statuses and topics it asks for (``list_jobs.lua``; every topic: those of
``P:topics``): a job's state changes write one listing index, not one per filter.
Layout version 1 kept an index of all jobs and one per topic (``P:ids``,
``P:topic:<t>``); up to version 5 one per status (``P:status:<s>``); ``migrate``
deletes them.

Ordering of due jobs: priority descending, then run_at, then id. A zset
score is a double, too narrow to pack a 32-bit priority *and* a microsecond run_at,
so ``P:ready:<t>`` splits the key in two: the score is ``-priority`` (exact in a
double) and the member is ``<run_at in µs, 16 digits zero-padded><id>`` (a run_at
before 1970, ``-X``: ``-`` and the 17 digits of X each replaced by 9 minus it, so it
sorts first, the earliest first; layout 8, which rewrites those of layout 7). Redis orders
equal scores by member bytes, i.e. by run_at and then by id (UUIDv7, sortable), so
``ZRANGE P:ready:<t> 0 n`` is exactly the claim order. A job enters ``ready`` when
its run_at is not after the writer's "now"; otherwise it waits in ``P:delayed:<t>``
(score run_at) and the claim script itself promotes the due ones of the claimer's
topics before it picks, so no process polls Redis to move delayed jobs.

A job becomes ``processing`` only through ``claim.lua``: wake-ups on ``P:wake`` say
"look again", they carry no job. Layout version 2 also kept, for pushing jobs to idle
workers from the enqueue script, ``P:idle:<t>``, ``P:idlers`` and ``P:inbox:<worker>``
channels; version 3 dropped that second claim path and ``migrate`` deletes those keys.

Cluster: every script touches keys it cannot declare up front (``job:<id>``). Each
script is called with the prefix as its one declared key (``KEYS[1]``), so a Cluster
client routes it to the node owning the prefix's slot, and on a Cluster the prefix is
a hash tag (``{conveyor}``, see ``cluster_prefix``) that puts every key of the
namespace in that one slot: Redis then runs every script atomically on one node.
"""

from __future__ import annotations

import re

# name → the parts after the prefix; "{}" is filled by the argument(s) in order.
_LAYOUT: dict[str, str] = {
    "job": "job:{}",
    "topic_status": "ts:{}:{}",
    "topics": "topics",
    "ready": "ready:{}",
    "delayed": "delayed:{}",
    "processing": "processing",
    "finished": "finished:{}",
    "unique": "unique",
    "schedule": "schedule:{}",
    "schedules": "schedules",
    "worker": "worker:{}",
    "workers": "workers",
    "leader": "leader",
    "version": "version",
    "wake": "wake",
    "events": "events",
    "listeners": "listeners",
}

DEFAULT_PREFIX = "conveyor"
LAYOUT_VERSION = 8


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"invalid Redis key prefix {prefix!r}")
        self.prefix = prefix
        self.wake = self._name("wake")
        self.events = self._name("events")
        self.listeners = self._name("listeners")
        self.version = self._name("version")
        self.workers = self._name("workers")

    def _name(self, name: str, *args: str) -> str:
        return f"{self.prefix}:{_LAYOUT[name].format(*args)}"

    def job(self, job_id: str) -> str:
        return self._name("job", job_id)

    def worker(self, worker_id: str) -> str:
        return self._name("worker", worker_id)

    def pattern(self) -> str:
        """A SCAN MATCH pattern for every key under this prefix (tests, cleanup)."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}:*"


def cluster_prefix(prefix: str) -> str:
    """The prefix as a hash tag (``name`` → ``{name}``) unless it already holds one: on a
    Cluster every key of a namespace must hash to one slot."""
    if "{" in prefix and "}" in prefix.split("{", 1)[1]:
        return prefix
    return "{" + prefix + "}"


def lua_with_keys(lua: str) -> str:
    """``lua`` with every key call ``k_<name>(args)`` written out as the expression that
    builds the same name as ``Keys`` from ``KEYS[1]`` (``k_job(id)`` becomes
    ``(PREFIX .. 'job:' .. (id))``), after the line that defines ``PREFIX``.

    Expressions rather than Lua functions: a script's functions are closures made
    again on every call, and eight key functions were ~9k instructions of an
    enqueue's ~161k inside Redis (callgrind, ``bench/redis_costs.py``).
    """
    return "local PREFIX = KEYS[1] .. ':'\n" + _write_out_keys(lua)


LUA_COMMENT = re.compile(r"--[^\n]*")
"""A Lua comment as conveyor's scripts write them: from ``--`` to the end of the line
(no ``--`` inside their string literals, no block comments)."""


def _write_out_keys(lua: str) -> str:
    """``lua_with_keys`` without the ``PREFIX`` line (also for a key call's arguments)."""
    comments = [(m.start(), m.end()) for m in LUA_COMMENT.finditer(lua)]
    out: list[str] = []
    pos = 0
    for match in _KEY_CALL.finditer(lua):
        in_comment = any(start <= match.start() < end for start, end in comments)
        if match.start() < pos or in_comment:
            continue  # in the arguments of a key call written out already, or a comment
        name = match.group(1)
        if name not in _LAYOUT:
            raise ValueError(f"unknown key function k_{name} in a Lua script")
        args, end = _call_args(lua, match.end())
        out += (lua[pos : match.start()], _key_expression(name, [_write_out_keys(a) for a in args]))
        pos = end
    out.append(lua[pos:])
    return "".join(out)


_KEY_CALL = re.compile(r"\bk_(\w+)\(")


def _call_args(lua: str, start: int) -> tuple[list[str], int]:
    """The arguments of the call whose ``(`` ends just before ``start`` (split at its
    top-level commas, skipping parentheses, braces and string literals), and the index
    just past its ``)``."""
    args: list[str] = []
    depth, i, begin = 0, start, start
    while i < len(lua):
        c = lua[i]
        if c in "'\"":
            i += 1
            while i < len(lua) and lua[i] != c:
                i += 2 if lua[i] == "\\" else 1
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            if depth == 0:
                if lua[begin:i].strip():
                    args.append(lua[begin:i].strip())
                return args, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(lua[begin:i].strip())
            begin = i + 1
        i += 1
    raise ValueError("unbalanced key call in a Lua script")


def _key_expression(name: str, args: list[str]) -> str:
    parts = _LAYOUT[name].split("{}")
    if len(args) != len(parts) - 1:
        raise ValueError(f"k_{name} takes {len(parts) - 1} argument(s), got {len(args)}")
    pieces = ["PREFIX"]
    for i, part in enumerate(parts):
        if part:
            pieces.append(repr(part))
        if i < len(args):
            pieces.append(f"({args[i]})")
    return "(" + " .. ".join(pieces) + ")"
