"""Kill a running search, resume it: exactly the budget of finished trials, none run twice; while it runs, a\nsecond driver of the study is refused."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

from search.study import INTERRUPTED_ATTR, default_tracking_uri
from tests.search.conftest import ROOT, load_study, mlflow_runs, search_args

pytestmark = pytest.mark.slow


def _finished(runs, study: str) -> int:
    """Finished trials, read from the study's SQLite file without creating anything: opening it through
    Optuna while the search creates it races the search's own schema set-up (the search then failed with
    "UNIQUE constraint failed: alembic_version.version_num")."""
    db = runs / study / "optuna.db"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            row = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()
    except sqlite3.Error:  # not there yet, or its tables not yet made
        return 0
    return int(row[0])


def test_kill_then_resume_gives_exactly_the_budget(tiny_cohort, runs, tmp_path) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "search" / "run.py"),
        *search_args(
            tiny_cohort,
            runs,
            "res",
            "--budget",
            "5",
            "--scheduler",
            "fifo",
            "--max-epochs",
            "2",
            "--max-concurrent",
            "1",
            "--num-cpus",
            "2",
        ),
    ]
    log = (tmp_path / "first.log").open("w")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.time() + 600
        while _finished(runs, "res") < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        assert _finished(runs, "res") >= 2, "search made no progress"
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone when the search failed on its own
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started, by id
        proc.wait(timeout=30)
    before = _finished(runs, "res")
    assert before < 5
    # the killed driver's lock is stale: its record is still there, the next driver takes it over
    assert json.loads((runs / "res" / "driver.json").read_text())["pid"] == proc.pid

    second = subprocess.run(
        cmd[:2] + ["--resume", *cmd[2:]], capture_output=True, text=True, timeout=600, env=env
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{before} of 5 trials finished before this session" in second.stdout

    trials = load_study(runs, "res").get_trials()
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 5
    interrupted = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(INTERRUPTED_ATTR in t.user_attrs for t in interrupted)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]

    parent, children = mlflow_runs(default_tracking_uri(runs), "res")
    done = [c for c in children if c.info.status == "FINISHED"]
    assert len(done) == 5
    assert len({c.data.tags["optuna_trial"] for c in done}) == 5  # no trial logged twice
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
