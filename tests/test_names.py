"""No module or package of the project has the name of a standard-library module or of a top-level module
of an installed distribution.

A script's folder is first on `sys.path` while it starts: `python search/run.py` has `search/` there until it
puts the project root in its place, and a script run from `dashboards/` has `dashboards/`. A
`search/statistics.py`, `search/optuna/` or `dashboards/mlflow.py` would then be imported instead of the
library of that name.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The project's top-level packages; every package folder below them is checked too (search/*, ...).
FOLDERS = ("search", "trainers", "spaces", "dashboards", "stagesearch", "bench")
#: The project's own distribution (installed, it lists the folders above as its top-level modules).
PROJECT = "stagesearch"
#: Names kept although they are taken, each with why it cannot shadow: modules the interpreter has imported
#: before it reads `sys.path` are never looked up there again (`test_kept_names_cannot_shadow` checks it).
KEPT = {
    "trainers/io.py": "io is imported by the interpreter itself (its standard streams) before sys.path is "
    "read; renamed, models registered before would not predict (their bundled code imports trainers.io)",
}


def package_folders() -> list[Path]:
    """Each top-level folder and every package folder (one with `__init__.py`) below it."""
    out = []
    for name in FOLDERS:
        top = ROOT / name
        out.append(top)
        out += sorted(p.parent for p in top.rglob("__init__.py") if p.parent != top)
    return out


def names_in(folder: Path) -> dict[str, Path]:
    """The names a folder on `sys.path` would offer for import: its modules and its sub-packages."""
    names = {p.stem: p for p in folder.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name: p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


@functools.cache
def taken_names() -> frozenset[str]:
    """Standard-library modules and the top-level modules of every installed distribution but this project."""
    installed = {
        top
        for top, dists in importlib.metadata.packages_distributions().items()
        if set(dists) - {PROJECT} and top.isidentifier()
    }
    return frozenset(sys.stdlib_module_names) | installed


def shadows() -> dict[str, str]:
    """Project path -> the name it takes, for every module or package named like a library."""
    taken = taken_names()
    found = {}
    for folder in package_folders():
        for name, path in names_in(folder).items():
            if name in taken:
                found[str(path.relative_to(ROOT))] = name
    return found


def test_no_module_or_package_shadows_a_library() -> None:
    found = {path: name for path, name in shadows().items() if path not in KEPT}
    assert found == {}, "rename these: a script's folder on sys.path would shadow the library of that name"


def test_every_package_folder_is_checked() -> None:
    folders = {str(p.relative_to(ROOT)) for p in package_folders()}
    assert {"search", "search/study", "search/tune", "trainers", "dashboards", "bench"} <= folders


def test_the_check_knows_the_libraries() -> None:
    taken = taken_names()
    assert {"statistics", "io", "optuna", "mlflow", "ray", "torch"} <= taken
    assert not {"search", "trainers", "dashboards", "stagesearch"} & taken  # the project's own names


def test_kept_names_cannot_shadow() -> None:
    kept = sorted({shadows().get(path, Path(path).stem) for path in KEPT})
    code = f"import sys; print(all(name in sys.modules for name in {kept!r}))"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True", f"{kept} is imported from sys.path: rename it"
    assert all((ROOT / path).exists() for path in KEPT), "a kept name is gone: remove it from KEPT"
