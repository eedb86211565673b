"""The MLflow tracking server fails during a search (`search.tracking.outbox`): a real server on 127.0.0.1, stopped
by the test while trials run. Stopped and started again, nothing is lost; stopped for good, every trial is in
Optuna as it ended, the search exits 0 with a warning, and `stagesearch sync-tracking` sends what was kept once
the server is back."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from search.tracking.outbox import PENDING_FILE
from tests.search.conftest import ROOT, free_port, load_study, mlflow_runs, mlflow_server, search_args

pytestmark = pytest.mark.slow

BUDGET = 5


def _finished(runs: Path, study: str) -> int:
    """Finished trials, read from the study's SQLite file without creating anything."""
    db = runs / study / "optuna.db"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            row = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


class Server:
    """An MLflow server on a fixed port and store, stopped and started again by the test."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.store = ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
        self.url = f"http://127.0.0.1:{self.port}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        self._running = contextlib.ExitStack()
        self._running.enter_context(mlflow_server(self.folder, self.store, port=self.port))

    def running(self) -> Server:
        """The server, started again if a test left it stopped."""
        if self._running is None:
            self.start()
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()  # the server's process group, by its id
            self._running = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (each test stops it and starts it again itself): a start costs ~25 s."""
    s = Server(tmp_path_factory.mktemp("mlflow"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _search(tiny_cohort: Path, runs: Path, study: str, url: str) -> list[str]:
    cmd = [sys.executable, str(ROOT / "search" / "run.py")]
    return cmd + search_args(
        tiny_cohort,
        runs,
        study,
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
        "--tracking-uri",
        url,
    )


def _env(wait_s: float) -> dict[str, str]:
    return {**os.environ, "STAGESEARCH_TRACKING_WAIT_S": str(wait_s), "STAGESEARCH_TRACKING_RETRY_S": "2"}


def _when(condition: Callable[[], bool], then: Callable[[], None], timeout: float = 600) -> threading.Thread:
    """Run `then` once `condition` holds (polled), in a thread."""

    def watch() -> None:
        deadline = time.time() + timeout
        while not condition() and time.time() < deadline:
            time.sleep(0.2)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _all_trials_in_optuna(runs: Path, study: str) -> None:
    trials = load_study(runs, study).get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == BUDGET, [
        t.state for t in trials
    ]


def _all_runs_in_mlflow(url: str, study: str) -> None:
    _, children = mlflow_runs(url, study)
    done = [c for c in children if c.info.status == "FINISHED"]
    assert len(done) == BUDGET, [(c.data.tags.get("optuna_trial"), c.info.status) for c in children]
    assert len({c.data.tags["optuna_trial"] for c in done}) == BUDGET  # no trial logged twice
    assert all("cv_auc" in c.data.metrics and c.data.tags.get("state") == "complete" for c in done)


def test_a_tracking_server_down_for_a_while_loses_nothing(tiny_cohort, runs, server) -> None:
    """Stopped after the first trial, started again two trials later: the kept records go when it is back."""
    server = server.running()
    study = "outage"
    stopped = _when(lambda: _finished(runs, study) >= 1, server.stop)
    back = _when(lambda: _finished(runs, study) >= 3 and not stopped.is_alive(), server.start)
    done = subprocess.run(
        _search(tiny_cohort, runs, study, server.url),
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(120),
    )
    stopped.join(timeout=60)
    back.join(timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.count(f"warning: MLflow tracking at {server.url} failed") == 1, out
    assert "answers again" in out, out
    assert not (runs / study / PENDING_FILE).exists()
    _all_trials_in_optuna(runs, study)
    _all_runs_in_mlflow(server.url, study)
    assert "registered: models:/" in done.stdout, out


def test_a_tracking_server_gone_for_good_leaves_optuna_whole_and_a_command_to_send_the_rest(
    tiny_cohort, runs, server
) -> None:
    server = server.running()
    study = "gone"
    stopped = _when(lambda: _finished(runs, study) >= 1, server.stop)
    started = time.time()
    done = subprocess.run(
        _search(tiny_cohort, runs, study, server.url),
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(5),
    )
    stopped.join(timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert time.time() - started < 600, "the search waited on tracking"
    assert "still fails after waiting 5 s" in done.stderr and "stagesearch sync-tracking" in done.stderr, out
    assert (runs / study / PENDING_FILE).exists()
    _all_trials_in_optuna(runs, study)

    where = ["--runs-dir", str(runs), "--study", study]
    stagesearch = [sys.executable, "-m", "stagesearch"]
    refused = subprocess.run(
        [*stagesearch, "sync-tracking", *where], capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 1 and f"MLflow tracking at {server.url}" in refused.stderr  # still down

    server.start()
    sent = subprocess.run(
        [*stagesearch, "sync-tracking", *where], capture_output=True, text=True, timeout=300
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert not (runs / study / PENDING_FILE).exists()
    _all_runs_in_mlflow(server.url, study)
    registered = subprocess.run(
        [*stagesearch, "register", *where], capture_output=True, text=True, timeout=600
    )
    assert registered.returncode == 0, registered.stdout + registered.stderr
