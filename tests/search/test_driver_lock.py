"""One driver per study (`search.session.driver_lock`): the study folder's lock and, for a study in PostgreSQL, the
database's advisory lock, held by real processes; a killed holder's lock is taken over. The whole commands
(a second `run --resume` and a `register` refused while a search runs) are tried in tests/search/test_resume.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.session.driver_lock import OWNER_FILE, StudyBusyError, hold
from search.study import StudyPaths
from tests.search.conftest import ROOT
from tests.search.pg_server import Postgres, running_postgres

HOLDER = """
import sys, time
from pathlib import Path
from search.study import StudyPaths
from search.session.driver_lock import StudyBusyError, hold
try:
    hold(StudyPaths(Path(sys.argv[1])), sys.argv[2] or None, "run")
except StudyBusyError as exc:
    print(exc, flush=True)
    sys.exit(2)
print("held", flush=True)
time.sleep(600)
"""


def _holder(folder: Path, storage: str = "", password: str = "") -> subprocess.Popen:
    """A process holding the study's lock (it prints "held"), or exiting 2 with the refusal; the database's
    password, if any, in its environment (never on a command line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"PGPASSWORD": password} if password else {})}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), storage], stdout=subprocess.PIPE, text=True, env=env
    )
    return proc


def _wait_held(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "held", line


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_live_holder_refuses_the_next_and_a_killed_ones_lock_is_taken_over(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "runs" / "s")
    proc = _holder(paths.root)
    try:
        _wait_held(proc)
        owner = json.loads((paths.root / OWNER_FILE).read_text())
        assert owner["pid"] == proc.pid and owner["command"] == "run"
        with pytest.raises(StudyBusyError, match=rf"process {proc.pid} on .*kill {proc.pid}.*--resume"):
            hold(paths, None, "register")
    finally:
        _kill(proc)
    assert (
        json.loads((paths.root / OWNER_FILE).read_text())["pid"] == proc.pid
    )  # stale, left by the killed one
    with hold(paths, None, "run") as lock:
        assert json.loads((paths.root / OWNER_FILE).read_text())["pid"] == os.getpid()
        with hold(paths, None, "register") as again:  # the same process again: one more hold, no deadlock
            assert again is lock and lock.depth == 2
        refused = _holder(paths.root)
        assert refused.wait(timeout=60) == 2
        assert f"process {os.getpid()} on " in refused.stdout.read()
    assert not (paths.root / OWNER_FILE).exists()  # released: the record goes with the lock
    taken = _holder(paths.root)
    try:
        _wait_held(taken)  # free again
    finally:
        _kill(taken)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


@pytest.mark.slow
def test_a_shared_postgres_study_has_one_driver_whatever_its_folder(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Two people with runs folders of their own on one PostgreSQL study: the advisory lock decides."""
    url = postgres.url("optuna")
    mine, theirs = StudyPaths(tmp_path / "a" / "shared"), StudyPaths(tmp_path / "b" / "shared")
    with hold(mine, url, "run"):
        with pytest.raises(
            StudyBusyError, match=rf"stagesearch run pid {os.getpid()} on .*from 127\.0\.0\.1"
        ):
            hold(theirs, url, "run")
        assert not (theirs.root / OWNER_FILE).exists()  # refused: nothing written, their folder lock let go
        with hold(StudyPaths(tmp_path / "b" / "other"), url, "run"):  # another study of the database: free
            pass
    proc = _holder(theirs.root, postgres.url("optuna", password=False), postgres.password)
    try:
        _wait_held(proc)
        with pytest.raises(StudyBusyError, match=rf"pid {proc.pid}"):
            hold(mine, url, "run")
    finally:
        _kill(proc)
    deadline = time.time() + 30  # the server notices the dead client's connection and drops its lock
    while True:
        try:
            with hold(mine, url, "run"):
                break
        except StudyBusyError:
            assert time.time() < deadline, "the killed holder's advisory lock was never released"
            time.sleep(0.5)


@pytest.mark.slow
def test_a_second_run_or_register_is_refused_while_a_search_runs(
    tiny_cohort: Path, runs: Path, tmp_path: Path
) -> None:
    """A real driver (a tiny search long enough to outlive the checks): a second `run --resume` and a `register`
    of its study exit 2 naming it and change nothing; a report still reads the study."""
    import contextlib
    import sqlite3

    from tests.search.conftest import search_args

    cmd = [sys.executable, str(ROOT / "search" / "run.py")]
    flags = search_args(
        tiny_cohort, runs, "busy", "--budget", "200", "--scheduler", "fifo", "--max-epochs", "2"
    )
    flags += ["--max-concurrent", "1", "--num-cpus", "2"]
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(cmd + flags, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    db = runs / "busy" / "optuna.db"

    def finished() -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                return int(con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
        except sqlite3.Error:
            return 0

    try:
        deadline = time.time() + 600
        while finished() < 1:
            assert driver.poll() is None and time.time() < deadline, (tmp_path / "driver.log").read_text()
            time.sleep(0.5)
        stagesearch = [sys.executable, "-m", "stagesearch"]
        where = ["--runs-dir", str(runs), "--study", "busy"]
        for second in (cmd + ["--resume", *flags], [*stagesearch, "register", *where]):
            before = (runs / "busy" / "config.json").read_text()
            done = subprocess.run(second, capture_output=True, text=True, timeout=300)
            assert done.returncode == 2, done.stdout + done.stderr
            assert f"is being run by process {driver.pid} on " in done.stderr, done.stderr
            assert f"kill {driver.pid}" in done.stderr and "--resume" in done.stderr
            assert (
                runs / "busy" / "config.json"
            ).read_text() == before  # no session added to the running study
        report = subprocess.run([*stagesearch, "report", *where], capture_output=True, text=True, timeout=300)
        assert report.returncode == 0, report.stdout + report.stderr
        assert driver.poll() is None, "the driver ended before the checks: they proved nothing"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started, by id
        driver.wait(timeout=30)
