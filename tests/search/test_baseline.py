"""The non-deep baseline: scored on exactly the study's folds, written to leaderboard.json, logged to MLflow as
its own run under the parent, printed beside the winner and shown in the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient

from dashboards.report import build_report
from search.commands.run import main
from search.session.baseline import score_baseline
from search.stats.baseline_text import verdict
from search.study import Leaderboard, LeaderboardRow, default_tracking_uri, resolve
from tests.search.conftest import mlflow_runs, search_args
from trainers.cv import prepare_cohort
from trainers.metrics import auc, bootstrap_auc_ci


def _by_fold(rows: list[dict]) -> list[set[str]]:
    folds = sorted({int(r["fold"]) for r in rows})
    return [{r["patient_id"] for r in rows if int(r["fold"]) == k} for k in folds]


def test_baseline_scores_every_patient_once_on_the_study_folds(tiny_cohort, tmp_path) -> None:
    prepared = prepare_cohort(tiny_cohort, folds=3, fold_seed=1, folds_path=tmp_path / "folds.json")
    score = score_baseline(prepared, seed=0)
    assert _by_fold(score.oof) == [set(split["val"]) for split in prepared.folds]
    assert sorted(r["patient_id"] for r in score.oof) == sorted(prepared.cohort.patients)
    labels, probs = np.asarray([r["label"] for r in score.oof]), np.asarray([r["prob"] for r in score.oof])
    assert score.cv_auc == pytest.approx(auc(labels, probs))  # pooled out-of-fold, like a trial's cv_auc
    assert score.masks and len(score.features) == len(score.table[0]) - 2
    assert 0 <= score.cv_auc_ci[0] <= score.cv_auc <= score.cv_auc_ci[1] <= 1
    assert {"accuracy", "precision", "recall", "f1", "fold_auc_mean"} <= set(score.metrics)


def _loop_bootstrap_auc_ci(y: np.ndarray, p: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """The textbook loop: resample patients, skip one-class resamples, percentiles of scikit-learn's AUC."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            values.append(roc_auc_score(y[idx], p[idx]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def test_vectorised_bootstrap_is_the_textbook_loop() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 30)
    p = np.round(rng.random(30) + 0.4 * y, 1)  # ties count half in both
    assert bootstrap_auc_ci(y, p, n=200, seed=3) == pytest.approx(_loop_bootstrap_auc_ci(y, p, n=200, seed=3))


def _board(
    best: float,
    base: float,
    ci: list[float],
    corrected: float | None = None,
    corrected_ci: list[float] | None = None,
) -> Leaderboard:
    row = LeaderboardRow("Tiny", "tiny_cnn", 0, best, {}, {}, False, None)
    baseline = {
        "cv_auc": base,
        "cv_auc_ci": ci,
        "metrics": {},
        "features": ["a"],
        "mlflow_run_id": "r",
        "masks": True,
    }
    return Leaderboard(
        "s", {}, [row], corrected_auc=corrected, corrected_auc_ci=corrected_ci, baseline=baseline
    )


def test_verdict_prefers_the_corrected_estimate() -> None:
    assert verdict(_board(0.95, 0.70, [0.6, 0.8], 0.85, [0.76, 0.93]))[0] == "beats"
    outcome, text = verdict(_board(0.95, 0.70, [0.6, 0.8], 0.74, [0.62, 0.85]))
    assert outcome == "not shown" and "corrected AUC 0.740" in text and "0.700" in text
    assert verdict(_board(0.95, 0.70, [0.6, 0.8], 0.66, [0.55, 0.77]))[0] == "does not"
    outcome, text = verdict(_board(0.95, 0.70, [0.6, 0.8]))  # no corrected estimate: the best cv_auc, flagged
    assert outcome == "beats" and "optimistic" in text
    assert verdict(_board(0.75, 0.70, [0.6, 0.8]))[0] == "not shown"
    assert verdict(_board(0.65, 0.70, [0.6, 0.8]))[0] == "does not"


def test_verdict_judges_the_whole_selection_when_the_study_compared_kinds() -> None:
    board = _board(0.95, 0.70, [0.6, 0.8], 0.85, [0.76, 0.93])
    whole = {"selection": {"corrected_auc": 0.74, "corrected_auc_ci": [0.62, 0.85]}}
    outcome, text = verdict(
        Leaderboard("s", {}, board.rows, 0.85, [0.76, 0.93], baseline=board.baseline, candidates=whole)
    )
    assert outcome == "not shown" and "corrected AUC (whole selection) 0.740" in text


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_search_writes_logs_prints_and_reports_its_baseline(ray_session, tiny_cohort, runs, capsys) -> None:
    args = search_args(
        tiny_cohort,
        runs,
        "bl",
        "--budget",
        "1",
        "--no-study-first",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "1",
        "--no-register",
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    folder = runs / "bl"
    board = json.loads((folder / "leaderboard.json").read_text())
    base = board["baseline"]
    assert {"cv_auc", "cv_auc_ci", "metrics", "features", "mlflow_run_id", "masks"} <= set(base)
    assert base["masks"] is True and "lesion_volume_mm3" in base["features"] and base["patients"] == 12
    assert base["cv_auc_ci"][0] <= base["cv_auc"] <= base["cv_auc_ci"][1]
    assert board["counts"]["finished"] == 1  # the baseline is not a trial
    row = next(line for line in out.splitlines() if line.startswith("baseline "))
    assert f"{base['cv_auc']:.3f}" in row and "not a trial" in row
    said = next(
        line for line in out.splitlines() if "beat the baseline" in line or "beats the baseline" in line
    )
    whole = (board.get("candidates") or {}).get("selection")
    if whole:  # judged by the estimate of what is registered, else the winner's, else the flagged best cv_auc
        assert f"corrected AUC (whole selection) {whole['corrected_auc']:.3f}" in said
    elif board["corrected_auc"] is not None:
        assert f"corrected AUC {board['corrected_auc']:.3f}" in said
    else:
        assert "optimistic" in said

    uri = default_tracking_uri(runs)
    parent, children = mlflow_runs(uri, "bl")
    assert len(children) == 1  # trials only
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(base["mlflow_run_id"])
    assert run.data.tags["role"] == "baseline" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.metrics["cv_auc"] == pytest.approx(base["cv_auc"]) and run.info.status == "FINISHED"
    assert parent.data.metrics["baseline_cv_auc"] == pytest.approx(base["cv_auc"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"oof_predictions.csv", "roc_curve.png", "features.csv"} <= names
    with Path(client.download_artifacts(run.info.run_id, "oof_predictions.csv")).open(newline="") as fh:
        oof = list(csv.DictReader(fh))
    folds = json.loads((folder / "folds.json").read_text())["folds"]
    assert _by_fold(oof) == [set(split["val"]) for split in folds]  # exactly the study's folds

    page = build_report(resolve(runs, "bl")).read_text()
    assert "Baseline on the same folds" in page and f"{base['cv_auc']:.3f}" in page
    assert base["mlflow_run_id"] in page

    assert main([*args, "--resume"]) == 0  # a later session reuses the stored baseline: one baseline run
    again = json.loads((folder / "leaderboard.json").read_text())["baseline"]
    assert again["mlflow_run_id"] == base["mlflow_run_id"]
    experiment = client.get_experiment_by_name("bl").experiment_id
    assert len(client.search_runs([experiment], "tags.role = 'baseline'")) == 1
