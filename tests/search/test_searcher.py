"""StageSearch, Tune's public `Searcher` over Optuna's ask/tell: what it tells Optuna of each trial, and its
checkpoint read back."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from search.tune.searcher import StageSearch, trial_outcome, trial_verdict
from tests.search.conftest import trial_result

COMPLETE, PRUNED, FAIL, RUNNING = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.RUNNING,
)


def _space(trial: optuna.Trial) -> dict:
    return {"x": trial.suggest_float("x", 0.0, 1.0), "fixed": 3}


def _searcher(storage: optuna.storages.BaseStorage | None = None) -> StageSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or optuna.storages.InMemoryStorage()
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=sampler, direction="maximize", load_if_exists=True
    )
    return StageSearch(space=_space, study=study, storage=storage)


def test_suggest_asks_optuna_and_returns_the_space_with_fixed_choices() -> None:
    searcher = _searcher()
    config = searcher.suggest("t1")
    (trial,) = searcher.study.get_trials()
    assert trial.state == RUNNING and config["_optuna_trial"] == trial.number
    assert config["x"] == trial.params["x"] and config["fixed"] == 3
    assert trial.user_attrs["config"] == {"x": trial.params["x"], "fixed": 3}
    assert searcher.suggest("t1") == config  # Tune asking again for the same trial: the same Optuna trial
    assert len(searcher.study.trials) == 1


def test_queued_comparison_trials_come_first_and_are_marked() -> None:
    searcher = _searcher()
    searcher.study.enqueue_trial({"x": 0.25}, user_attrs={"comparison": True})
    config = searcher.suggest("t1")
    assert config["x"] == 0.25 and config["comparison"] is True
    assert "comparison" not in searcher.suggest("t2")


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
    return trial_result(epoch, value, value, final)


def test_stage_search_tells_optuna_pruned_for_early_stops_and_complete_for_finished() -> None:
    searcher = _searcher()
    for tid in ("a", "b"):
        config = searcher.suggest(tid)
        trial = searcher.study.trials[-1]
        assert config.pop("_optuna_trial") == trial.number
        assert trial.user_attrs["config"] == config  # the whole configuration, for the refit
    first = _result(1, 0.6, final=False)
    searcher.on_trial_result("a", first)
    searcher.on_trial_complete("a", first)  # ASHA stopped it after epoch 1
    last = _result(2, 0.9, final=True)
    searcher.on_trial_complete("b", last)  # its last epoch arrives only here
    searcher.on_trial_complete("b", last)  # told once, even if Tune calls twice
    a, b = searcher.study.get_trials()
    assert a.state == PRUNED and a.intermediate_values == {1: 0.6}
    assert b.state == COMPLETE and b.value == 0.9 and b.intermediate_values == {2: 0.9}
    assert b.user_attrs["accuracy"] == 0.6 and b.user_attrs["fold_auc_sd"] == 0.1
    assert b.user_attrs["epochs_completed"] == 2 and b.user_attrs["pretrained"] is False


def test_a_failed_trial_is_told_fail_with_the_process_error() -> None:
    searcher = _searcher()
    searcher.suggest("a")
    searcher.on_trial_complete("a", None, error=True)
    (a,) = searcher.study.get_trials()
    assert a.state == FAIL and a.user_attrs["fail_reason"] == "worker_error"


def test_saved_searcher_restored_tells_the_same_optuna_trials(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    searcher = _searcher(storage)
    for tid in ("a", "b"):
        searcher.suggest(tid)
    searcher.on_trial_result("a", _result(1, 0.6, final=False))
    searcher.on_trial_complete("b", _result(2, 0.9, final=True))
    searcher.save(str(tmp_path / "searcher.json"))

    again = _searcher(storage)  # a new driver over the same storage
    again.restore(str(tmp_path / "searcher.json"))
    again.on_trial_result("a", _result(1, 0.1, final=False))  # epoch 1 was reported: kept as it was
    again.on_trial_complete("a", _result(2, 0.8, final=True))
    again.on_trial_complete("b", _result(2, 0.1, final=True))  # told before the save: not again
    a, b = again.study.get_trials()
    assert a.state == COMPLETE and a.value == 0.8 and a.intermediate_values == {1: 0.6, 2: 0.8}
    assert b.state == COMPLETE and b.value == 0.9


@pytest.mark.parametrize(
    ("result", "failure", "error", "state", "reason"),
    [
        ({"cv_auc": 0.8, "final": True}, None, False, "complete", None),
        ({"cv_auc": 0.8, "final": False}, None, False, "pruned", None),
        (
            {"cv_auc": math.nan, "final": True},
            None,
            False,
            "pruned",
            None,
        ),  # Optuna cannot rank it: not complete
        ({"cv_auc": 0.8, "final": True}, {"reason": "nan_loss"}, False, "failed", "nan_loss"),
        (None, None, True, "failed", "worker_error"),
        (None, {"reason": "out_of_memory"}, True, "failed", "out_of_memory"),  # its own record says why
    ],
)
def test_one_rule_for_how_a_trial_ended(
    result: dict | None, failure: dict | None, error: bool, state: str, reason: str | None
) -> None:
    got, record = trial_verdict(result, failure, error)
    assert got == state and (record or {}).get("reason") == reason
