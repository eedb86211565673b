"""A search logging to an MLflow tracking server (started on 127.0.0.1 by the test) keeps runs nested."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient

from search.commands.run import main
from tests.search.conftest import mlflow_runs, mlflow_server, search_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(folder, ["--backend-store-uri", f"sqlite:///{folder / 'server.db'}"]) as url:
        yield url


def test_nested_runs_on_tracking_server(server, tiny_cohort, runs) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        args = search_args(
            tiny_cohort,
            runs,
            "remote",
            "--budget",
            "2",
            "--scheduler",
            "fifo",
            "--max-epochs",
            "1",
            "--cpus-per-trial",
            "1",
            "--tracking-uri",
            server,
            "--no-register",
        )
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
