"""Files written whole or not at all: the one way the project writes a file another run trusts (a study's
JSON and out-of-fold tables, folds, the preprocessing cache, the tracking kept while MLflow is down).

The content goes to a temporary file beside the target (same folder, so the same disk), which replaces the
target only once it is complete. A reader never sees half a file; a write cut short (a full disk, a killed
process) leaves the old file as it was, and the temporary file is removed when the write fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, suffix: str = "", unique: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write; put in place when the block ends without error, else removed.
    `suffix`: one a writer insists on (numpy's `savez` adds `.npz` when a name lacks it). `unique`: the process
    id in the temporary name, for files several processes may write at once (the shared cache); otherwise the
    name is fixed, so the next write replaces what a killed writer left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{f'.{os.getpid()}' if unique else ''}.tmp{suffix}")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`path.write_text(text)`, whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
