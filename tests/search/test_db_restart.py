"""The Optuna database restarted under a running search (`search.guard.db_wait`): a real PostgreSQL server on
127.0.0.1, stopped by the test while trials run and started again; the search waits, reconnects and finishes the
budget, with no trial lost or counted twice, and Optuna and MLflow agree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search.study import default_tracking_uri
from tests.search.conftest import ROOT, mlflow_runs, search_args
from tests.search.pg_server import Postgres, running_postgres

pytestmark = pytest.mark.slow

BUDGET = 5


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, f"no {text!r} in the search's output"
        time.sleep(0.2)


def test_a_database_restart_mid_search_is_waited_for(
    postgres: Postgres, tiny_cohort: Path, runs: Path, tmp_path
) -> None:
    storage = postgres.url("optuna", password=False)  # the password only in the environment
    cmd = [sys.executable, str(ROOT / "search" / "run.py")] + search_args(
        tiny_cohort,
        runs,
        "restart",
        "--budget",
        str(BUDGET),
        "--scheduler",
        "fifo",
        "--max-epochs",
        "2",
        "--max-concurrent",
        "1",
        "--num-cpus",
        "2",
        "--storage",
        storage,
    )
    env = {**os.environ, "PGPASSWORD": postgres.password, "STAGESEARCH_STORAGE_WAIT_S": "120"}
    log = tmp_path / "search.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_for_line(log, "trial 1 complete", proc)
            postgres.stop()
            time.sleep(5)  # trials go on training meanwhile; the driver's calls wait
            postgres.start()
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    text = log.read_text()
    assert rc == 0, text
    assert "optuna storage: the database does not answer" in text, text
    assert "optuna storage: the database answers again" in text, text

    study = optuna.load_study(study_name="restart", storage=postgres.url("optuna"))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == BUDGET, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]

    _, children = mlflow_runs(default_tracking_uri(runs), "restart")
    done = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["optuna_trial"]) for c in done) == sorted(t.number for t in complete)
    by_trial = {int(c.data.tags["optuna_trial"]): c for c in done}
    for t in complete:  # the same numbers on both sides
        assert by_trial[t.number].data.metrics["cv_auc"] == pytest.approx(t.value, abs=1e-9)
