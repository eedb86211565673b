"""Helpers for search tests: reading back the Optuna study and the MLflow runs with their own APIs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def search_args(tiny_cohort: Path, runs: Path, study: str, *extra: str) -> list[str]:
    """Flags for a tiny CPU search on the tiny phantom cohort."""
    return [
        "--manifest",
        str(tiny_cohort),
        "--space",
        "tiny",
        "--folds",
        "3",
        "--runs-dir",
        str(runs),
        "--study",
        study,
        "--no-pretrained",
        "--radiomics-trials",
        "3",  # the three classifiers' reference points: seconds on the tiny cohort
        *extra,
    ]


def trial_result(epoch: int, mean_fold_auc: float, cv_auc: float, final: bool) -> dict:
    """What a trial reports to Tune after an epoch (`TrialEpoch.to_result`'s keys), for the searcher's tests."""
    return {
        "cv_auc": cv_auc,
        "mean_fold_auc": mean_fold_auc,
        "training_iteration": epoch,
        "final": final,
        "epoch": epoch,
        "fold_auc_sd": 0.1,
        "train_loss": 0.5,
        "metrics/accuracy": 0.6,
        "metrics/precision": 0.7,
        "pretrained": False,
        "pretrained_note": "",
    }


def load_study(runs: Path, study: str) -> optuna.Study:
    config = json.loads((runs / study / "config.json").read_text())
    return optuna.load_study(study_name=study, storage=config["storage"])


def mlflow_runs(tracking_uri: str, study: str) -> tuple[object, list]:
    """(parent run, child runs) of a study's experiment."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(study)
    assert exp is not None, f"no MLflow experiment {study}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "search"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    return parents[0], children


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback servers, never via a proxy


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(
    folder: Path,
    store_args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 180,
    port: int | None = None,
) -> Iterator[str]:
    """An MLflow tracking server on 127.0.0.1 (log in `folder/server.log`), stopped by its process group's id;
    on `port` when given (a server started again where its clients expect it), else on a free one."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port := port or free_port()),
        *store_args,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    log = (folder / "server.log").open("a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with DIRECT.open(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (folder / "server.log").read_text()
            assert time.time() < deadline, "MLflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers, by the id of the process we started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An empty MLflow store and a saved pyfunc model, made once a module (see registry_helpers.make_template)."""
    from tests.search.registry_helpers import make_template

    return make_template(tmp_path_factory.mktemp("registry_template"))


@pytest.fixture(scope="session")
def registered_study(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny search with --holdout 0.25 that registers its winner at the end (two complete trials); the runs
    folder. Shared by the registration modules; each registers and promotes only what it checks."""
    import ray

    from search.commands.run import main as run_main

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = tmp_path_factory.mktemp("reg") / "runs"
    args = search_args(
        tiny_cohort,
        runs,
        "reg",
        "--budget",
        "2",
        "--holdout",
        "0.25",
        "--force-small-holdout",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "2",
        "--cpus-per-trial",
        "1",
        "--register-kind",
        "single",
    )
    try:
        assert run_main(args) == 0
    finally:
        ray.shutdown()
    return runs
