"""The layers keep their one-way dependencies, and every runtime is a complete `Runtime`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import baton
from baton.runtime import Runtime, get_runtime, runtime_names

SRC = Path(baton.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or lazily inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "baton":
                found |= {f"baton.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", sorted((SRC / "runtime").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_under_runtime_imports_a_layer_above_it(path):
    above = ("baton.api", "baton.events", "baton.cli", "baton.web")
    upward = sorted(m for m in _imports(path) if m.startswith(above))
    assert not upward, f"{path.relative_to(SRC)} imports {upward}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_only_patterns_and_agents_know_what_kind_of_pattern_or_step_they_hold(path):
    relative = path.relative_to(SRC).as_posix()
    if relative.startswith(("patterns/", "examples/", "demo/")) or relative in ("agents.py", "__init__.py"):
        return
    text = path.read_text()
    for telltale in ("Supervisor", "Pipeline)", "isinstance(step, Agent", '"supervisor"', "instructions"):
        assert telltale not in text, f"{relative} asks what it holds ({telltale!r})"


def test_every_runtime_found_through_the_entry_points_implements_the_whole_protocol():
    assert {"local", "celery"} <= set(runtime_names())
    for name in ("local", "celery"):
        runtime = get_runtime(name)
        assert isinstance(runtime, Runtime), name
        assert runtime.name == name
