"""No private name of Ray, Optuna or MLflow is used outside `search/adapters.py`, found by reading the code.

A use is: an import of a private module or name of theirs; an attribute starting with `_` reached from a name
imported from them; a private method or attribute of one of their classes defined, called or set in our
subclass of it; and the cases this project once had (OptunaSearch's `_ot_trials`, `_ot_study` and
`_completed_trials`, Tune's `_print`, MLflow's event stream), wherever they appear, strings included.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "trainers", "spaces", "dashboards", "stagesearch", "bench")
LIBRARIES = ("ray", "optuna", "mlflow")
ADAPTERS = ROOT / "search" / "adapters.py"
KNOWN = {
    "_ot_trials",
    "_ot_study",
    "_completed_trials",
    "_print",
    "MLFLOW_LOGGING_STREAM",
    "_set_trial_param",
}
KNOWN |= {"_get_trials", "_create_new_trial", "_get_best_trial_id", "_cached_storage"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _library(module: str) -> bool:
    return module.split(".")[0] in LIBRARIES


def _chain(node: ast.AST) -> list[str]:
    """`a.b.c` as ["a", "b", "c"] ([] when the chain does not start at a name)."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return [node.id, *reversed(names)] if isinstance(node, ast.Name) else []


def _base_privates(module: str, name: str) -> set[str]:
    """Private names of the library class `module.name` and its library bases: class attributes, and what
    their methods set on `self`."""
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return set()
    found: set[str] = set()
    for klass in getattr(cls, "__mro__", ()):
        if not _library(getattr(klass, "__module__", "")):
            continue
        found |= {n for n in vars(klass) if _private(n)}
        try:
            found |= set(re.findall(r"self\.(_[a-zA-Z]\w*)\s*=", inspect.getsource(klass)))
        except (OSError, TypeError):
            pass
    return found


class _Reader(ast.NodeVisitor):
    """Collects the private uses of one module's source."""

    def __init__(self) -> None:
        self.imported: dict[str, str] = {}  # local name -> "module" or "module.name", for library imports
        self.found: list[str] = []

    def _say(self, node: ast.AST, what: str) -> None:
        self.found.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _library(alias.name):
                self.imported[alias.asname or alias.name.split(".")[0]] = (
                    alias.asname and alias.name or alias.name.split(".")[0]
                )
                if any(_private(p) for p in alias.name.split(".")):
                    self._say(node, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if not _library(module):
            return
        if any(_private(p) for p in module.split(".")):
            self._say(node, f"from {module} import ...")
        for alias in node.names:
            self.imported[alias.asname or alias.name] = f"{module}.{alias.name}"
            if _private(alias.name) or alias.name in KNOWN:
                self._say(node, f"from {module} import {alias.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if node.attr in KNOWN:
            self._say(node, f".{node.attr}")
        elif chain and chain[0] in self.imported and any(_private(p) for p in chain[1:]):
            self._say(node, ".".join(chain))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value in KNOWN:
            self._say(node, repr(node.value))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        privates: set[str] = set()
        for base in node.bases:
            chain = _chain(base)
            if chain and chain[0] in self.imported:
                target = ".".join([self.imported[chain[0]], *chain[1:]])
                module, _, name = target.rpartition(".")
                privates |= _base_privates(module, name)
        for inner in ast.walk(node):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef) and inner.name in privates:
                self._say(inner, f"defines {node.name}.{inner.name} over its library base")
            elif isinstance(inner, ast.Attribute) and inner.attr in privates:
                if isinstance(inner.value, ast.Name) and inner.value.id == "self":
                    self._say(inner, f"self.{inner.attr} of {node.name}'s library base")
                elif isinstance(inner.value, ast.Call) and _chain(inner.value.func) == ["super"]:
                    self._say(inner, f"super().{inner.attr}")
        self.generic_visit(node)


def private_uses(source: str) -> list[str]:
    """Every private use of Ray, Optuna or MLflow in `source`."""
    reader = _Reader()
    reader.visit(ast.parse(source))
    return reader.found


def _modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if p != ADAPTERS]


def test_no_private_name_of_ray_optuna_or_mlflow_outside_the_adapters() -> None:
    found = {str(p.relative_to(ROOT)): private_uses(p.read_text()) for p in _modules()}
    found = {path: uses for path, uses in found.items() if uses}
    assert not found, f"private uses outside search/adapters.py (move them there, with the reason): {found}"


@pytest.mark.parametrize(
    "source",
    [
        "from ray.tune.search.optuna import OptunaSearch\n"
        "class S(OptunaSearch):\n    def f(self, t):\n        return self._ot_trials.get(t)\n",
        "def f(searcher, t):\n    return searcher._completed_trials\n",
        "from ray.tune.progress_reporter import TrialProgressCallback\n"
        "class L(TrialProgressCallback):\n    def _print(self, msg):\n        pass\n",
        "from mlflow.utils import logging_utils\nlogging_utils.MLFLOW_LOGGING_STREAM.write = print\n",
        "import optuna\nx = optuna.storages._cached_storage\n",
        "from optuna.storages._cached_storage import _CachedStorage\n",
        "import optuna\nclass R(optuna.storages.RDBStorage):\n    def f(self):\n        return self._version_manager\n",
        "METHODS = ('create_new_trial', '_set_trial_param')\n",
        "from ray.tune.search import Searcher\nclass S(Searcher):\n    def m(self):\n        return self._metric\n",
    ],
)
def test_the_reader_finds_the_uses_it_is_meant_to(source: str) -> None:
    assert private_uses(source), source


def test_our_own_private_helpers_on_library_subclasses_are_not_flagged() -> None:
    source = (
        "from ray.tune import Callback\nfrom ray.tune.search import Searcher\n"
        "class C(Callback):\n    def _set_attrs(self):\n        self._mine = 1\n"
        "class S(Searcher):\n    def _report(self):\n        return self.trials\n"
    )
    assert private_uses(source) == []
