"""The study folder's disk fills during a search (`search.guard.disk`): a small tmpfs the test mounts as the runs
folder, filled by the test once a trial has finished. The search stops with a message naming the folder and its
free space, leaves no half-written file a resume would trust, and `--resume` after freeing space completes the
budget. Mounting needs root: outside CI the test skips without it; under CI it must run."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.search.conftest import ROOT, load_study, search_args

pytestmark = pytest.mark.slow

BUDGET = 4


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 MB tmpfs mounted for the test (a trial keeps fold models of 60 MB), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        _unavailable("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        _unavailable(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _finished(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return int(con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
    except sqlite3.Error:
        return 0


def _fill(folder: Path) -> Path:
    """Fill the disk of `folder` with one file, to the last byte it takes."""
    filler = folder / "filler"
    chunk = b"\0" * 2**20
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(chunk)
            f.flush()
    with contextlib.suppress(OSError), filler.open("ab") as f:  # the last partial megabyte
        for _ in range(2**10):
            f.write(b"\0" * 1024)
            f.flush()
    return filler


def test_a_full_disk_stops_the_search_cleanly_and_resume_completes_it(
    tiny_cohort, small_disk, tmp_path
) -> None:
    runs = small_disk / "runs"
    cmd = [sys.executable, str(ROOT / "search" / "run.py")]
    flags = search_args(tiny_cohort, runs, "full", "--budget", str(BUDGET), "--scheduler", "fifo")
    flags += ["--max-epochs", "2", "--max-concurrent", "1", "--num-cpus", "2"]
    env = {**os.environ, "STAGESEARCH_MIN_FREE_MB": "100", "STAGESEARCH_CACHE": str(tmp_path / "cache")}
    filled: list[Path] = []

    def fill_after_the_first_trial() -> None:
        _wait(lambda: _finished(runs / "full" / "optuna.db") >= 1)
        filled.append(_fill(small_disk))

    watcher = threading.Thread(target=fill_after_the_first_trial, daemon=True)
    watcher.start()
    first = subprocess.run(cmd + flags, capture_output=True, text=True, timeout=900, env=env)
    watcher.join(timeout=60)
    out = first.stdout + first.stderr
    assert filled, out
    assert first.returncode == 1, out
    assert (
        "no space left for study 'full'" in first.stderr and str((runs / "full").resolve()) in first.stderr
    ), out
    assert "MB free" in first.stderr and "--resume" in first.stderr, out
    assert "Traceback" not in out, out
    assert not list(runs.rglob("*.tmp")), "a half-written file was left"
    done_before = _finished(runs / "full" / "optuna.db")
    assert done_before < BUDGET

    filled[0].unlink()
    second = subprocess.run(cmd + ["--resume", *flags], capture_output=True, text=True, timeout=900, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    trials = load_study(runs, "full").get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == BUDGET, [
        t.state for t in trials
    ]
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]


def _wait(condition, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.2)
