"""The non-deep baseline of a study: hand-made lesion features and a regularised logistic regression, scored on
exactly the study's folds in the trials' unit (pooled out-of-fold, patient-level AUC).

A user with about 100 patients will ask whether the deep search beats a simple model; this answers it on the
same patients and folds, in seconds. It runs once per study after the search (a later session reuses it while
the folds and the features are the same), is logged to MLflow as its own run under the study's parent run,
and is written to `leaderboard.json` as `baseline`. It is not a trial: it does not count against the budget
and never becomes the winner. How it reads beside the winner is `search.stats.baseline_text`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param

from search.stats.study_candidates import baseline_oof
from search.study import Leaderboard, StudyFormatError, StudyPaths, read_leaderboard, write_oof
from search.tracking.outbox import first_line, tracking_errors
from search.tracking.tracker import StudyTracker, write_trial_artifacts
from trainers.cv import PreparedCohort
from trainers.features import feature_table
from trainers.metrics import CI_RESAMPLES, bootstrap_auc_ci, fold_spread, summary_metrics
from trainers.metrics import auc as roc_auc
from trainers.preprocess import PREPROCESS_VERSION, load_lesions
from trainers.radiomics_model import MODEL, C, fit_folds

FEATURES_VERSION = 1  # bump when trainers.features changes what it measures: a stored baseline is then redone
ROW_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "fold_auc_mean", "fold_auc_sd")


@dataclass(frozen=True)
class BaselineScore:
    """The baseline's out-of-fold predictions on the study's folds and what they score."""

    features: list[str]
    masks: bool
    oof: list[dict[str, Any]]  # patient_id, label, prob, fold: the trials' OOF table columns
    cv_auc: float
    cv_auc_ci: tuple[float, float]
    metrics: dict[str, float]
    table: list[list[Any]]  # patient, label, feature values: what the model saw
    seconds: float


def score_baseline(prepared: PreparedCohort, seed: int = 0, cache_dir: Path | None = None) -> BaselineScore:
    """Features of the study's (non-held-out) patients from the preprocessing cache, scored on its folds."""
    start = time.perf_counter()
    lesions = load_lesions(prepared.cohort, cache_dir=cache_dir, progress=False)
    names, patients, x, y, masks = feature_table(prepared.rois, lesions)
    _, oof = fit_folds(x, y, patients, prepared.folds)
    labels = np.asarray([r["label"] for r in oof])
    probs = np.asarray([r["prob"] for r in oof])
    metrics = summary_metrics(labels, probs)
    per_fold = []
    for k in range(len(prepared.folds)):
        mine = [r for r in oof if r["fold"] == k]
        per_fold.append(
            roc_auc(np.asarray([r["label"] for r in mine]), np.asarray([r["prob"] for r in mine]))
        )
    metrics["fold_auc_mean"], metrics["fold_auc_sd"] = fold_spread(per_fold)
    ci = bootstrap_auc_ci(labels, probs, n=CI_RESAMPLES, seed=seed)
    table = [[p, int(lab), *(float(v) for v in row)] for p, lab, row in zip(patients, y, x, strict=True)]
    return BaselineScore(names, masks, oof, metrics["auc"], ci, metrics, table, time.perf_counter() - start)


def folds_key(folds: list[dict[str, list[str]]]) -> str:
    """What a stored baseline was computed on: the folds, the preprocessing and the feature versions."""
    text = json.dumps([folds, PREPROCESS_VERSION, FEATURES_VERSION, C], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def leaderboard_entry(score: BaselineScore, run_id: str | None, key: str) -> dict[str, Any]:
    """`leaderboard.json`'s `baseline` (JSON-ready; NaN metrics left out)."""
    return {
        "cv_auc": _num(score.cv_auc),
        "cv_auc_ci": [_num(v) for v in score.cv_auc_ci],
        "metrics": {
            k: score.metrics[k] for k in ROW_METRICS if math.isfinite(score.metrics.get(k, math.nan))
        },
        "features": score.features,
        "mlflow_run_id": run_id,
        "masks": score.masks,
        "model": MODEL,
        "patients": len(score.table),
        "folds": 1 + max((r["fold"] for r in score.oof), default=-1),
        "seconds": round(score.seconds, 2),
        "key": key,
    }


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def log_baseline_run(tracker: StudyTracker, score: BaselineScore) -> str:
    """The baseline as its own MLflow run, nested under the study's parent run and tagged `role=baseline`
    (never `trial`): parameters, metrics, its OOF table, ROC curve and feature table."""
    tags = {"role": "baseline", "baseline": "true", "model": MODEL, "masks": str(score.masks).lower()}
    if tracker.parent_run_id:
        tags["mlflow.parentRunId"] = tracker.parent_run_id
    run_id = tracker.client.create_run(tracker.experiment_id, run_name="baseline", tags=tags).info.run_id
    params = {
        "model": MODEL,
        "C": C,
        "features": ",".join(score.features),
        "n_features": len(score.features),
        "masks": score.masks,
        "patients": len(score.table),
    }
    metrics = {
        "cv_auc": score.cv_auc,
        "cv_auc_ci_low": score.cv_auc_ci[0],
        "cv_auc_ci_high": score.cv_auc_ci[1],
        **{k: score.metrics[k] for k in ROW_METRICS},
        "seconds": score.seconds,
    }
    now = int(time.time() * 1000)
    tracker.client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))],
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
    )
    with tempfile.TemporaryDirectory() as tmp:
        oof = Path(tmp) / "oof.csv"
        write_oof(oof, score.oof, epoch=0)
        for path in [
            *write_trial_artifacts(Path(tmp) / "out", oof, "baseline"),
            _feature_csv(Path(tmp), score),
        ]:
            tracker.client.log_artifact(run_id, str(path))
    tracker.client.set_terminated(run_id, status="FINISHED")
    return run_id


def _feature_csv(folder: Path, score: BaselineScore) -> Path:
    path = folder / "features.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "label", *score.features])
        writer.writerows(score.table)
    return path


def attach_baseline(
    board: Leaderboard, paths: StudyPaths, prepared: PreparedCohort | None, tracker: StudyTracker, seed: int
) -> Leaderboard:
    """The leaderboard with its `baseline`: the one an earlier session of the study stored when it was made
    on the same folds and features, else scored now and logged to MLflow. A baseline that cannot be scored
    (e.g. a fold with one class in training) is said so on stderr and left out; the search's results stand."""
    if prepared is None:
        return board
    key = folds_key(prepared.folds)
    try:
        before = read_leaderboard(paths)
    except StudyFormatError:  # an older leaderboard.json: rewritten below anyway
        before = None
    if (
        before is not None
        and before.baseline
        and before.baseline.get("key") == key
        and baseline_oof(paths).is_file()
    ):
        return dataclasses.replace(board, baseline=before.baseline)
    try:
        score = score_baseline(prepared, seed)
    except ValueError as exc:
        print(f"baseline not scored: {exc}", file=sys.stderr, flush=True)
        return board
    try:
        write_oof(
            baseline_oof(paths), score.oof, epoch=0
        )  # a radiomics candidate (search.stats.study_candidates)
    except OSError as exc:
        print(f"warning: the baseline's out-of-fold table was not kept ({exc})", file=sys.stderr, flush=True)
    try:
        run_id = log_baseline_run(tracker, score)
    except tracking_errors() as exc:  # the search's results stand; the baseline is in leaderboard.json
        print(
            f"warning: the baseline's MLflow run was not logged ({first_line(exc)})",
            file=sys.stderr,
            flush=True,
        )
        run_id = ""
    return dataclasses.replace(board, baseline=leaderboard_entry(score, run_id, key))
