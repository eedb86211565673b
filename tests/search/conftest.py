"""Helpers for search tests: reading back the Optuna study and the MLflow runs with their own APIs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def search_args(tiny_cohort: Path, runs: Path, study: str, *extra: str) -> list[str]:
    """Flags for a tiny CPU search on the tiny phantom cohort."""
    return [
        "--manifest", str(tiny_cohort), "--space", "tiny", "--folds", "3", "--runs-dir", str(runs),
        "--study", study, "--no-pretrained", *extra,
    ]  # fmt: skip


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
