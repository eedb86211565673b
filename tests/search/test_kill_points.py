"""The driver SIGKILLed at each named point (`search.guard.kill_points`), at a seeded pass, and resumed each
time: the study ends with exactly its budget, a consistent folder and a registered model."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.guard.kill_points import KILL_ENV, POINTS
from search.study import default_tracking_uri
from tests.search.conftest import ROOT, load_study, mlflow_runs, search_args

pytestmark = pytest.mark.slow

BUDGET = 3
SEED = 26


def _run(cmd: list[str], log: Path, kill: str | None) -> int:
    """One session of the search (its own process group); the Ray processes a killed driver leaves, killed."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill:
        env[KILL_ENV] = kill
    with log.open("a") as out:
        out.write(f"\n=== {KILL_ENV}={kill}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            rc = proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return rc


def test_killed_at_every_named_point_and_resumed_the_study_ends_whole(tiny_cohort, runs, tmp_path) -> None:
    rng = random.Random(SEED)
    plan = [
        ("trial_running", rng.randint(1, 3)),  # an epoch of the first or second trial
        ("before_optuna_tell", rng.randint(1, 2)),
        ("registering", 1),  # the session that finishes the budget, registering the winner
        ("writing_leaderboard", 1),  # the next session (nothing left to run), as it writes the leaderboard
    ]
    assert [p for p, _ in plan] == list(POINTS)
    cmd = [sys.executable, str(ROOT / "search" / "run.py")]
    flags = search_args(tiny_cohort, runs, "kills", "--budget", str(BUDGET), "--scheduler", "fifo")
    flags += ["--max-epochs", "2", "--max-concurrent", "1", "--num-cpus", "2"]
    log = tmp_path / "sessions.log"
    for i, (point, nth) in enumerate(plan):
        argv = cmd + flags if i == 0 else cmd + ["--resume", *flags]
        rc = _run(argv, log, f"{point}@{nth}")
        assert rc == -signal.SIGKILL, f"not killed at {point}@{nth} (exit {rc}):\n{log.read_text()[-4000:]}"
    assert _run(cmd + ["--resume", *flags], log, None) == 0, log.read_text()[-4000:]

    study = load_study(runs, "kills")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == BUDGET, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert all("interrupted" in t.user_attrs for t in trials if t.state == optuna.trial.TrialState.FAIL)

    folder = runs / "kills"
    assert not list(folder.rglob("*.tmp")), "a half-written file was left"
    board = json.loads((folder / "leaderboard.json").read_text())
    assert board["counts"]["complete"] == BUDGET
    assert {r["trial"] for r in board["rows"]} <= {t.number for t in complete}
    assert board["rows"][0]["trial"] == study.best_trial.number
    winner = json.loads((folder / "winner.json").read_text())
    assert winner["trial"] == study.best_trial.number

    uri = default_tracking_uri(runs)
    _, children = mlflow_runs(uri, "kills")
    done = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["optuna_trial"]) for c in done) == sorted(t.number for t in complete)
    client = MlflowClient(uri, uri)
    version = client.get_model_version_by_alias(winner["model_name"], "challenger")
    assert int(version.version) == winner["model_version"]
