"""A full disk under the study folder: found before a trial starts, and said plainly when it strikes anyway.

Before each new trial the searcher checks the free space of the study folder's disk (`free_space_problem`): under
`MIN_FREE_ENV` megabytes (default 200: a trial's out-of-fold table, its kept fold models, which are about
100 MB for a small ViT, and the tracking store's growth) the search starts no new trial, lets the running ones
finish and ends with exit 1 and that message, as when failures stop it. When the disk fills anyway (another
program filled it mid-trial), the error that reaches the driver is recognised (`is_disk_full`: `ENOSPC`, a quota,
SQLite's "database or disk is full") and said the same way instead of a traceback. Every file a resume trusts
is written atomically (a temporary file put in place), so what a full disk cuts short is never taken for
whole; `--resume` after freeing space completes the budget.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

MIN_FREE_ENV = "STAGESEARCH_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 200.0
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it came from, says the disk (or a quota) is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper of the driver's error
        text = f"{exc} {orig or ''}".lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_mb(folder: Path) -> float:
    """Free megabytes on the disk of `folder` (or of its nearest existing parent)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**20


def min_free_mb() -> float:
    return float(os.environ.get(MIN_FREE_ENV, DEFAULT_MIN_FREE_MB))


def disk_full_message(folder: Path, study: str) -> str:
    """What to say and do when the study folder's disk is full."""
    return (
        f"no space left for study {study!r}: the disk of {Path(folder).resolve()} has {free_mb(folder):.0f} MB "
        f"free (a trial needs at least {min_free_mb():.0f} MB, {MIN_FREE_ENV}). Finished trials are kept; free "
        f"some space, then continue with `stagesearch run --study {study} --resume`"
    )


def free_space_problem(folder: Path, study: str) -> str | None:
    """`disk_full_message` when the study folder's disk has less than `min_free_mb()` free, else None."""
    return disk_full_message(folder, study) if free_mb(folder) < min_free_mb() else None
