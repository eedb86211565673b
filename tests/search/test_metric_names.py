"""One metric vocabulary: Optuna's objective is `cv_auc`, its intermediate values the per-epoch `mean_fold_auc`
that early stopping compares; MLflow logs the same values at step = epoch (strictly increasing), the final
metrics at the last epoch's step, descriptions on every run, and pruned trials visibly pruned."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from search.study.results import TrialEpoch, exact
from search.tracking.run_notes import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    OPTUNA_NOTE,
    PRUNED_SUFFIX,
)
from search.tracking.tracker import StudyTracker
from search.tune.searcher import StageSearch
from search.tune.tuning import name_metrics
from tests.search.conftest import trial_result as _result

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One MLflow database for the module (creating its tables takes seconds); each test its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"


def test_optuna_names_cv_auc_and_records_mean_fold_auc_per_epoch() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    name_metrics(study)
    assert study.metric_names == ["cv_auc"] and study.user_attrs[OPTUNA_NOTE[0]] == OPTUNA_NOTE[1]
    sampler = optuna.samplers.RandomSampler(seed=0)
    searcher = StageSearch(
        space=lambda t: {"x": t.suggest_float("x", 0, 1)},
        study=optuna.load_study(study_name="s", storage=storage, sampler=sampler),
        storage=storage,
    )
    for tid in ("pruned", "complete"):
        searcher.suggest(tid)
    searcher.on_trial_result("pruned", _result(1, 0.61, 0.55, final=False))
    searcher.on_trial_complete("pruned", _result(2, 0.58, 0.52, final=False))  # ASHA's stop: only here
    searcher.on_trial_result("complete", _result(1, 0.7, 0.66, final=False))
    searcher.on_trial_result("complete", _result(1, 0.1, 0.1, final=False))  # a restarted trial: first kept
    searcher.on_trial_complete("complete", _result(2, 0.75, 0.8, final=True))
    pruned, complete = study.get_trials()
    assert pruned.state == PRUNED and pruned.intermediate_values == {1: 0.61, 2: 0.58}
    assert pruned.value == 0.58  # Optuna's value of a pruned trial: its last mean_fold_auc
    assert complete.state == COMPLETE and complete.intermediate_values == {1: 0.7, 2: 0.75}
    assert complete.value == 0.8  # the objective: cv_auc at the last epoch


def test_aucs_are_rounded_where_they_are_made() -> None:
    report = SimpleNamespace(
        epoch=1,
        train_loss=0.4,
        fold_auc=[0.4, 0.5],
        mean_fold_auc=0.45000000000000007,
        cv_auc=0.1 + 0.2,
        metrics={"accuracy": 0.30000000000000004},
        pretrained=False,
        pretrained_note="",
    )
    epoch = TrialEpoch.from_epoch(report, epochs=2)
    assert (epoch.mean_fold_auc, epoch.cv_auc, epoch.metrics["accuracy"]) == (0.45, 0.3, 0.3)
    assert exact(401 / 1000) != exact(400 / 1000)  # different AUCs stay different
    assert exact(float("nan")) != exact(float("nan"))


def _epoch(epoch: int, mean: float, cv: float, final: bool) -> TrialEpoch:
    return TrialEpoch.from_result(_result(epoch, mean, cv, final))


def test_tracking_steps_final_metrics_notes_and_pruned_runs(store: tuple[str, Path]) -> None:
    assert NOTE_TAG == MLFLOW_RUN_NOTE  # the tag MLflow's UI shows as a description
    tracker = StudyTracker(store[0], "s", store[1])
    tracker.open_parent(
        None, {"budget": 2, "space": "tiny", "max_epochs": 3, "scheduler": "asha"}, {"study": "s"}
    )
    client: MlflowClient = tracker.client
    assert client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    for number in (0, 1):
        tracker.start_trial(number, {"backbone": "tiny_cnn", "lr": 1e-3}, {"backbone": "tiny_cnn"})
    for epoch, mean, cv in ((1, 0.6, 0.62), (2, 0.65, 0.7), (3, 0.7, 0.72)):
        tracker.log_epoch(0, epoch, _epoch(epoch, mean, cv, epoch == 3).epoch_metrics())
    tracker.log_epoch(0, 1, {"mean_fold_auc": 0.1})  # a restarted trial's epoch 1 again: not logged twice
    tracker.finish_trial(0, "complete", _epoch(3, 0.7, 0.72, True))
    tracker.log_epoch(1, 1, _epoch(1, 0.55, 0.5, False).epoch_metrics())
    tracker.finish_trial(1, "pruned", _epoch(1, 0.55, 0.5, False))

    complete, pruned = (client.get_run(tracker.children[n]) for n in (0, 1))
    for run, last in ((complete, 3), (pruned, 1)):
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == sorted(set(steps)) and steps[-1] == last, (
                key,
                steps,
            )  # final metrics at the last epoch
    history = {m.step: m.value for m in client.get_metric_history(complete.info.run_id, "mean_fold_auc")}
    assert history == {1: 0.6, 2: 0.65, 3: 0.7}
    assert "fold_auc_mean" not in complete.data.metrics  # one name per value: mean_fold_auc
    assert complete.data.metrics["precision"] == 0.7 and complete.data.metrics["epochs_completed"] == 3
    assert complete.info.run_name == "trial-0000" and complete.info.status == "FINISHED"
    assert pruned.info.run_name == f"trial-0001{PRUNED_SUFFIX}" and pruned.data.tags["state"] == "pruned"
    assert pruned.info.status == "FINISHED"  # KILLED would draw the red cross of a failed run
    assert "Pruned: early stopping ended it after epoch 1 of 3" in pruned.data.tags[NOTE_TAG]
    assert "Complete: 3 of 3 epochs, cv_auc 0.7200" in complete.data.tags[NOTE_TAG]
    parent = client.get_run(tracker.parent_run_id)
    assert "mean_fold_auc" in parent.data.tags[NOTE_TAG] and "budget 2 trials" in parent.data.tags[NOTE_TAG]
    for best in (0.72, 0.74):  # a session, then a resumed one: the summary steps forward
        tracker.log_parent_summary({"best_cv_auc": best}, {"best_trial": "0"}, "FINISHED")
    summary = client.get_metric_history(tracker.parent_run_id, "best_cv_auc")
    assert [(m.step, m.value) for m in summary] == [(1, 0.72), (2, 0.74)]


def test_runs_a_stopped_search_left_open_get_final_metrics_at_their_last_epoch(
    store: tuple[str, Path],
) -> None:
    tracker = StudyTracker(store[0], "stopped", store[1])
    tracker.open_parent(None, {"budget": 1}, {"study": "stopped"})
    run_id = tracker.start_trial(0, {"lr": 1e-3}, {"backbone": "tiny_cnn"})
    tracker.log_epoch(0, 1, {"mean_fold_auc": 0.6, "cv_auc": 0.61})
    tracker.log_epoch(0, 2, {"cv_auc": 0.66})  # the search was stopped before the rest of epoch 2 was logged
    recovered = {"cv_auc": 0.66, "fold_auc_mean": 0.64, "accuracy": 0.7, "epochs_completed": 2}
    assert tracker.close_stale_children({0: ("pruned", recovered)}) == 0
    run = tracker.client.get_run(run_id)
    assert run.info.run_name.endswith(PRUNED_SUFFIX) and run.info.status == "FINISHED"
    steps = {k: [m.step for m in tracker.client.get_metric_history(run_id, k)] for k in run.data.metrics}
    assert steps == {"mean_fold_auc": [1, 2], "cv_auc": [1, 2], "accuracy": [2], "epochs_completed": [2]}
    assert (
        tracker.client.get_metric_history(run_id, "mean_fold_auc")[-1].value == 0.64
    )  # Optuna's fold_auc_mean
