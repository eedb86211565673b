"""Size limits that keep each module one idea: no file over 400 lines and no function over 60 in any package
(search/, dashboards/, trainers/, spaces/, stagesearch/ and bench/); and search/ in rooms (sub-packages) of 2-8 modules, with few modules of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _files(*folders: str) -> list[Path]:
    files = sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))
    assert files, folders
    return files


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than `limit` lines (decorators and docstring included)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                out.append((node.name, lines))
    return out


def test_the_length_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions("def g():\n    return 1\n") == []


PACKAGES = ("search", "spaces", "trainers", "dashboards", "stagesearch", "bench")


@pytest.mark.parametrize("path", _files(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_over_60_lines(path: Path) -> None:
    assert long_functions(path.read_text()) == []


def test_no_file_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _files(*PACKAGES)}
    assert {k: v for k, v in sizes.items() if v > MAX_FILE_LINES} == {}


MAX_TOP_LEVEL_MODULES = 10
ROOM_SIZES = range(2, 9)  # modules per room of search/, its __init__ not counted


def test_search_is_rooms_of_a_few_modules() -> None:
    """search/ keeps a handful of top-level modules; the rest lives in rooms (sub-packages) of 2-8 modules."""
    search = ROOT / "search"
    assert len(list(search.glob("*.py"))) <= MAX_TOP_LEVEL_MODULES
    rooms = {p.parent.name: p.parent for p in search.glob("*/__init__.py")}
    assert len(rooms) >= 4, sorted(rooms)
    sizes = {
        name: len([p for p in room.glob("*.py") if p.name != "__init__.py"]) for name, room in rooms.items()
    }
    assert {name: n for name, n in sizes.items() if n not in ROOM_SIZES} == {}
    assert not [p for p in search.glob("*/*/__init__.py")], "rooms hold modules, not rooms"
