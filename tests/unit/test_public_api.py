"""The public API is discoverable: every name in ``conveyor.__all__`` and every public
method of the client classes and ``Job`` has a docstring and an explicit signature (no
bare ``**kwargs: Any``); docstrings point at docs/, not at documents outside the
repository; every ``from conveyor import ...`` in the docs imports."""

from __future__ import annotations

import ast
import inspect
import pydoc
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor import AsyncConveyor, Conveyor, Job

REPO = Path(__file__).resolve().parents[2]
CLASSES = (Conveyor, AsyncConveyor, Job)


def public_members() -> Iterator[tuple[str, Any]]:
    for name in conveyor.__all__:
        if name != "__version__":
            yield name, getattr(conveyor, name)
    for cls in CLASSES:
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") and name != "__init__":
                continue
            if inspect.isfunction(member) or isinstance(member, property):
                yield f"{cls.__name__}.{name}", member


MEMBERS = dict(public_members())


def callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, member in MEMBERS.items():
        if inspect.isfunction(member):
            yield name, member


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_every_public_name_has_a_docstring(name: str) -> None:
    member = MEMBERS[name]
    doc = member.__doc__ if isinstance(member, property) else inspect.getdoc(member)
    assert doc and doc.strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(dict(callables())))
def test_no_public_callable_takes_bare_kwargs(name: str) -> None:
    signature = inspect.signature(MEMBERS[name])
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            # ``**options: Unpack[SomeTypedDict]`` names every accepted key; ``Any`` does not.
            assert param.annotation not in ("Any", Any, inspect.Parameter.empty), f"{name}(**{param.name})"


@pytest.mark.parametrize(
    "name",
    ["AsyncConveyor.enqueue", "AsyncConveyor.handler", "AsyncConveyor.list", "AsyncConveyor.cancel", "Job.payload_as"],
)
def test_main_methods_document_arguments_results_and_errors(name: str) -> None:
    doc = inspect.getdoc(MEMBERS[name]) or ""
    for section in ("Args:", "Returns:", "Raises:"):
        assert section in doc, f"{name}: no {section} section"


def test_help_on_the_sync_enqueue_lists_its_arguments() -> None:
    text = pydoc.render_doc(Conveyor.enqueue, renderer=pydoc.plaintext)
    for word in ("max_retries", "retry_delay", "unique_key", "connection", "ValidationError", "Returns"):
        assert word in text


def test_the_sync_facade_has_every_public_method_of_the_async_client() -> None:
    # Not on the facade: connect() returns the backend, whose methods are coroutines.
    skip = {"connect", "emit", "subscribe", "events", "insert", "scheduled_events", "events_with_insert"}
    missing = sorted(
        name
        for name, member in inspect.getmembers(AsyncConveyor, inspect.isfunction)
        if not name.startswith("_")
        and name not in skip
        and inspect.iscoroutinefunction(member)
        and not hasattr(Conveyor, name)
    )
    assert not missing


def sync_twins() -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(Conveyor, inspect.isfunction)
        if (not name.startswith("_") or name == "__init__") and inspect.isfunction(getattr(AsyncConveyor, name, None))
    )


@pytest.mark.parametrize("name", sync_twins())
def test_each_sync_method_has_its_async_twins_signature_docstring_and_types(name: str) -> None:
    sync, aio = getattr(Conveyor, name), getattr(AsyncConveyor, name)
    assert inspect.signature(sync) == inspect.signature(aio)
    assert sync.__doc__ == aio.__doc__
    assert sync.__qualname__ == f"Conveyor.{name}"
    # The annotations resolve (help() and get_type_hints show real types, not strings
    # of names the facade's module lacks).
    assert typing.get_type_hints(sync) == typing.get_type_hints(aio)
    if name != "__init__":
        assert not inspect.iscoroutinefunction(sync)


def test_the_sync_facade_wraps_every_method_it_shares_with_the_async_client() -> None:
    shared = {n for n in sync_twins() if n != "__init__"}
    assert {"enqueue", "get", "handler", "schedule", "run_worker", "close"} <= shared


def test_help_on_the_sync_client_shows_typed_signatures() -> None:
    text = pydoc.render_doc(Conveyor, renderer=pydoc.plaintext)
    assert "get(self, job_id: 'str') -> 'Job'" in text
    assert "Cancel a pending job" in text


def source_files() -> list[Path]:
    return sorted((REPO / "src" / "conveyor").rglob("*.py"))


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_docstrings_and_comments_point_to_docs_not_to_outside_documents(path: Path) -> None:
    text = path.read_text()
    for pattern in (r"SPEC\s*§", r"seed doc"):
        found = re.search(pattern, text)
        assert found is None, f"{path.name}: {text[max(0, found.start() - 40) : found.end() + 20]!r}"


def documents() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_docs_point_to_documents_in_the_repository(path: Path) -> None:
    """No "SPEC §", "the seed document" or "the spec": the reader has only the repository."""
    text = path.read_text()
    for pattern in (r"SPEC\s*§", r"seed doc", r"\bthe spec\b"):
        found = re.search(pattern, text, flags=re.I)
        assert found is None, f"{path.name}: {text[max(0, found.start() - 40) : found.end() + 20]!r}"


def documented_imports() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "examples").glob("*.py"))]:
        text = path.read_text()
        blocks = [text] if path.suffix == ".py" else re.findall(r"```python\n(.*?)```", text, flags=re.S)
        for block in blocks:
            for line in block.splitlines():
                match = re.match(r"\s*from (conveyor[\w.]*) import (.+)", line)
                if match:
                    for name in match.group(2).split("#")[0].strip(" ()").split(","):
                        if name.strip():
                            found.append((match.group(1), name.strip().split(" as ")[0]))
    return sorted(set(found))


@pytest.mark.parametrize(("module", "name"), documented_imports())
def test_every_documented_import_exists(module: str, name: str) -> None:
    imported = __import__(module, fromlist=[name])
    assert hasattr(imported, name), f"from {module} import {name}"


def test_python_blocks_of_the_docs_compile() -> None:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S):
            ast.parse(block.replace("...", "None"), filename=str(path))
