"""The one folder written outside a study: cached phantom cohorts, preprocessed scans and shared folds."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$STAGESEARCH_CACHE` (`~` expanded), else ~/.cache/stagesearch; content-keyed, safe to delete."""
    env = os.environ.get("STAGESEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stagesearch"
