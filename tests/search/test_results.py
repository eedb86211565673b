"""A trial's per-epoch report: the trainer's EpochReport -> scalars for Tune -> the driver's typed view."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import mlflow
import pytest

from search.study.results import TrialEpoch
from search.tracking.tracker import tracking_uri


def _epoch_report(**changes: object) -> SimpleNamespace:
    report = dict(
        epoch=3,
        train_loss=0.4,
        fold_auc=[0.6, 0.8, math.nan],
        mean_fold_auc=0.7,
        cv_auc=0.72,
        metrics={"auc": 0.72, "accuracy": 0.65, "f1": 0.6, "youden_threshold": math.nan},
        oof=[{"patient_id": "P1"}],
        seconds=1.0,
        pretrained=True,
        pretrained_note="timm cache",
    )
    return SimpleNamespace(**{**report, **changes})


def test_report_is_flat_scalars_and_reads_back_the_same() -> None:
    epoch = TrialEpoch.from_epoch(_epoch_report(), epochs=3)
    result = epoch.to_result()
    assert all(isinstance(v, int | float | str | bool) for v in result.values()), result
    assert (
        "oof" not in result and "auc" not in epoch.metrics
    )  # the table goes to the study folder; no duplicate
    assert epoch.final and result["metrics/accuracy"] == 0.65 and "metrics/youden_threshold" not in result
    assert epoch.fold_auc_sd == pytest.approx(0.1414, abs=1e-4)  # over the folds that have an AUC
    back = TrialEpoch.from_result({**result, "training_iteration": 3, "trial_id": "x"})  # Tune adds its keys
    assert back == epoch
    assert TrialEpoch.from_result({**result, "metrics": {"f1": 0.5}}).metrics["f1"] == 0.5  # nested as well


def test_final_metrics_and_optuna_attributes() -> None:
    epoch = TrialEpoch.from_epoch(_epoch_report(epoch=2), epochs=3)
    assert not epoch.final
    final = epoch.final_metrics()
    assert final["cv_auc"] == 0.72 and final["fold_auc_mean"] == 0.7 and final["epochs_completed"] == 2
    assert set(epoch.trial_attrs()) == {"accuracy", "f1", "fold_auc_mean", "fold_auc_sd", "epochs_completed"}
    assert epoch.epoch_metrics() == {
        "mean_fold_auc": 0.7,
        "cv_auc": 0.72,
        "train_loss": 0.4,
        "accuracy": 0.65,
        "f1": 0.6,
    }


def test_a_fold_without_an_auc_gives_asha_a_neutral_value() -> None:
    epoch = TrialEpoch.from_epoch(_epoch_report(fold_auc=[math.nan], mean_fold_auc=math.nan), epochs=3)
    assert epoch.mean_fold_auc == 0.5 and math.isnan(epoch.fold_auc_sd)
    assert "fold_auc_sd" not in epoch.final_metrics()


def test_tracking_uri_is_restored_with_its_environment_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)  # nothing set (the shared fixture restores the previous state afterwards)
    inside = f"sqlite:///{tmp_path / 'm.db'}"
    with tracking_uri(inside):
        assert mlflow.get_tracking_uri() == inside and os.environ["MLFLOW_TRACKING_URI"] == inside
    assert not mlflow.is_tracking_uri_set() and "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///later.db")  # a later variable still counts
    assert mlflow.get_tracking_uri() == "sqlite:///later.db"
    with pytest.raises(RuntimeError), tracking_uri(inside):
        raise RuntimeError("the block failed")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///later.db"
    assert mlflow.get_tracking_uri() == "sqlite:///later.db"
    mlflow.set_tracking_uri("sqlite:///explicit.db")  # an explicit URI comes back as it was
    with tracking_uri(inside):
        pass
    assert mlflow.get_tracking_uri() == "sqlite:///explicit.db"
