"""Search spaces: one module each, named after the space, with a define-by-run `space(trial) -> dict`.

A space module defines `space(trial)` (Optuna's trial API only, no computation), `DESCRIPTION`,
`BACKBONES` (the names `space` may choose) and `MAX_EPOCHS`. Adding a space means adding one module here; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def list_spaces() -> list[str]:
    """Names of all space modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_space(name: str) -> ModuleType:
    """The space module called `name` (ValueError naming the known spaces otherwise)."""
    known = list_spaces()
    if name not in known:
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(known)}")
    module = importlib.import_module(f"{__name__}.{name}")
    for attr in ("space", "DESCRIPTION", "BACKBONES", "MAX_EPOCHS"):
        if not hasattr(module, attr):
            raise TypeError(f"search space module {module.__name__} lacks {attr}")
    return module
