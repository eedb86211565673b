"""A search logging to an MLflow tracking server (started on 127.0.0.1 by the test) keeps runs nested."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import ray
from mlflow.tracking import MlflowClient

from search.cli import main
from tests.search.conftest import mlflow_runs, search_args

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]  # fmt: skip
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
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


def test_nested_runs_on_tracking_server(server, tiny_cohort, runs) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        args = search_args(tiny_cohort, runs, "remote", "--budget", "2", "--scheduler", "fifo", "--max-epochs",
                           "1", "--cpus-per-trial", "1", "--tracking-uri", server, "--no-register")  # fmt: skip
        assert main(args) == 0
    finally:
        ray.shutdown()
    assert not (runs / "mlflow.db").exists()  # nothing went to the local default store
    parent, children = mlflow_runs(server, "remote")
    assert len(children) == 2
    client = MlflowClient(tracking_uri=server)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "cv_auc" in child.data.metrics
        assert "oof_predictions.csv" in {a.path for a in client.list_artifacts(child.info.run_id)}
