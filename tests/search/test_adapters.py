"""The private attributes of Ray's OptunaSearch that search/tune/adapters.py relies on, and StageSearch's verdicts."""

from __future__ import annotations

import math

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from search.tune import adapters
from search.tune.tuning import StageSearch, trial_outcome

COMPLETE, PRUNED, FAIL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def _space(trial: optuna.Trial) -> dict:
    return {"x": trial.suggest_float("x", 0.0, 1.0)}


def _searcher(cls: type = OptunaSearch) -> OptunaSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return cls(space=_space, metric="cv_auc", mode="max", sampler=optuna.samplers.RandomSampler(seed=0))


def test_optuna_search_still_has_the_private_attributes_we_use() -> None:
    searcher = _searcher()
    assert adapters.missing(searcher) == [], "Ray's OptunaSearch changed: update search/tune/adapters.py"
    config = searcher.suggest("t1")
    trial = adapters.optuna_trial(searcher, "t1")
    assert isinstance(trial, optuna.Trial) and trial.params == config
    assert adapters.optuna_study(searcher).trials[0].number == trial.number
    assert not adapters.is_completed(searcher, "t1")
    searcher.on_trial_complete("t1", {"cv_auc": 0.7})
    assert adapters.is_completed(searcher, "t1")  # Ray's own bookkeeping, read through the adapter
    assert adapters.optuna_trial(searcher, "unknown") is None


def test_missing_names_what_changed() -> None:
    class Renamed:
        _ot_trials: dict = {}

    assert set(adapters.missing(Renamed())) == {"_completed_trials", "_ot_study"}


@pytest.mark.parametrize(
    ("result", "error", "expected"),
    [
        ({"cv_auc": 0.8, "final": True}, False, (COMPLETE, 0.8)),  # ran to its last epoch
        ({"cv_auc": 0.8, "final": False}, False, (PRUNED, None)),  # stopped early by the scheduler
        ({"cv_auc": math.nan, "final": True}, False, (PRUNED, None)),  # no value to rank it by
        ({}, False, (PRUNED, None)),  # never reported
        (None, False, (PRUNED, None)),
        ({"cv_auc": 0.8, "final": True}, True, (FAIL, None)),  # an error wins over everything
    ],
)
def test_trial_outcome(result: dict | None, error: bool, expected: tuple) -> None:
    assert trial_outcome(result, error) == expected


def _result(epoch: int, value: float, final: bool) -> dict:
    return {
        "cv_auc": value,
        "mean_fold_auc": value,
        "training_iteration": epoch,
        "final": final,
        "epoch": epoch,
        "fold_auc_sd": 0.1,
        "train_loss": 0.5,
        "metrics/accuracy": 0.6,
        "pretrained": False,
        "pretrained_note": "",
    }


def test_stage_search_tells_optuna_pruned_for_early_stops_and_complete_for_finished() -> None:
    searcher = _searcher(StageSearch)
    for tid in ("a", "b"):
        config = searcher.suggest(tid)
        trial = adapters.optuna_trial(searcher, tid)
        assert config.pop("_optuna_trial") == trial.number
        assert trial.user_attrs["config"] == config  # the whole configuration, for the refit
    first = _result(1, 0.6, final=False)
    searcher.on_trial_result("a", first)
    searcher.on_trial_complete("a", first)  # ASHA stopped it after epoch 1
    last = _result(2, 0.9, final=True)
    searcher.on_trial_complete("b", last)  # its last epoch arrives only here
    searcher.on_trial_complete("b", last)  # told once, even if Tune calls twice
    a, b = adapters.optuna_study(searcher).get_trials()
    assert a.state == PRUNED and a.intermediate_values == {1: 0.6}
    assert b.state == COMPLETE and b.value == 0.9 and b.intermediate_values == {2: 0.9}
    assert b.user_attrs["accuracy"] == 0.6 and b.user_attrs["fold_auc_sd"] == 0.1
    assert b.user_attrs["epochs_completed"] == 2 and b.user_attrs["pretrained"] is False
