"""The search's sampler as a Ray Tune searcher: Tune's public `Searcher` interface over Optuna's ask/tell.

Each Tune trial asks the study for a trial and runs the space's define-by-run function on it (`Space.space`);
every epoch's mean fold AUC is reported at step = epoch (what ASHA compares: the dashboard's intermediate
values); the end is told once, COMPLETE with the cv_auc only when the trial's last report was its final epoch,
PRUNED when the scheduler stopped it, FAIL with the reason when it failed on its own. The sampler sees running
trials as Optuna shows them (RUNNING, with the epochs reported so far), as it would in any ask/tell loop.

`bench.simulate` drives the same study, sampler and space through ask/tell; here Tune calls `suggest`,
`on_trial_result` and `on_trial_complete` from the driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from search.guard.disk import free_space_problem
from search.guard.kill_points import kill_point
from search.study import (
    BATCH_SIZE_ATTR,
    COMPARISON_ATTR,
    CONFIG_ATTR,
    ERROR_ATTR,
    FAIL_REASON_ATTR,
    OPTUNA_NUMBER_KEY,
    StudyPaths,
    read_failure,
)
from search.study.results import TrialEpoch
from search.tracking.run_notes import SCHEDULER_METRIC, SEARCH_METRIC
from search.tune.failures import WORKER_ERROR, stop_message
from trainers.metrics import is_finite

#: Optuna's intermediate value of a trial at step = epoch: the metric early stopping compares, so that the
#: dashboard's intermediate-values plot shows what ASHA saw (and tracking logs at the same steps).
INTERMEDIATE_METRIC = SCHEDULER_METRIC
TrialState = optuna.trial.TrialState


COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"
#: How each way a trial ends is told to Optuna.
OPTUNA_STATE = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, FAILED: TrialState.FAIL}


def trial_verdict(
    result: dict | None, failure: dict | None, error: bool = False
) -> tuple[str, dict[str, Any] | None]:
    """The one rule for how a trial ended, for Optuna (the searcher) and MLflow and the console (the tracking
    callback) alike: FAILED with its failure record when it failed on its own (`trials/<n>/failure.json`) or
    its process did (`error`: reason `worker_error`); COMPLETE when its last report was its final epoch with a
    finite cv_auc; PRUNED otherwise (the scheduler stopped it, or it left no value to rank it by)."""
    if failure is None and error:
        failure = {
            "reason": WORKER_ERROR,
            "error": "the trial's process failed (see the MLflow run's error tag)",
        }
    if failure is not None:
        return FAILED, failure
    final = bool((result or {}).get("final"))
    return (COMPLETE if final and is_finite((result or {}).get(SEARCH_METRIC)) else PRUNED), None


def trial_outcome(result: dict | None, error: bool) -> tuple[TrialState, float | None]:
    """`trial_verdict` as Optuna is told it: the state, and the cv_auc of a complete trial (Optuna keeps a
    pruned trial's last intermediate value)."""
    state, _ = trial_verdict(result, None, error)
    return OPTUNA_STATE[state], _told_value(result, state)


def _told_value(result: dict | None, state: str) -> float | None:
    """The objective Optuna is told: a complete trial's cv_auc, nothing otherwise."""
    return float(result[SEARCH_METRIC]) if state == COMPLETE and result else None


class StageSearch(Searcher):
    """Tune's searcher over `study` (its sampler included; `storage` is where it lives) and the define-by-run
    `space`.

    Tags each config with its Optuna trial number, records early-stopped trials as PRUNED and trials that failed
    on their own as FAIL with the reason, and stops suggesting when failures say the setup is broken
    (`search.tune.failures`) or the study folder's disk is nearly full (`search.guard.disk`).
    `study_dir`: where trials write `trials/<number>/failure.json`.
    """

    def __init__(
        self,
        space: Callable[[optuna.Trial], dict[str, Any] | None],
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        metric: str = SEARCH_METRIC,
        mode: str = "max",
        study_dir: str | None = None,
        study_label: str = "",
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.study = study
        self.storage = storage  # the study's, for `restore`
        self.trials: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial it asked for
        self.told: set[str] = set()  # Tune trial ids whose end Optuna has been told
        self.steps: dict[str, set[int]] = {}  # the epochs reported per Tune trial
        self.paths = StudyPaths(Path(study_dir)) if study_dir else None
        self.study_label = study_label
        self.outcomes: list[str | None] = []  # this session's finished trials: failure reason or None
        self.stop_reason: str | None = None

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.stop_reason is None and self.paths is not None:
            self.stop_reason = free_space_problem(self.paths.root, self.study_label)
        if self.stop_reason:
            return Searcher.FINISHED
        trial = self.trials.get(trial_id)
        if trial is None:
            trial = self.trials[trial_id] = self.study.ask()
        params = {**trial.params, **(self.space(trial) or {})}
        trial.set_user_attr(CONFIG_ATTR, dict(params))  # fixed choices too: the refit needs all of it
        params[OPTUNA_NUMBER_KEY] = trial.number
        if trial.user_attrs.get(COMPARISON_ATTR):  # queued first: the scheduler lets it run to the end
            params[COMPARISON_ATTR] = True
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict | None) -> None:
        """Report `INTERMEDIATE_METRIC` at step = epoch, once per step (a restarted trial, its node lost,
        reports its epochs again: Optuna keeps the first)."""
        step = (result or {}).get("training_iteration")
        value = (result or {}).get(INTERMEDIATE_METRIC)
        steps = self.steps.setdefault(trial_id, set())
        trial = self.trials.get(trial_id)
        if trial is None or step in steps or trial_id in self.told or not is_finite(value):
            return
        trial.report(float(value), int(step))
        steps.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.trials.get(trial_id)
        if trial is None or trial_id in self.told:
            return
        # a scheduler's stop arrives here without on_trial_result: that epoch too
        self._report(trial_id, result)
        recorded = read_failure(self.paths, trial.number) if self.paths else None
        state, failure = trial_verdict(result, recorded, error)
        _set_attrs(trial, result, failure)
        kill_point("before_optuna_tell")
        self.study.tell(trial, _told_value(result, state), state=OPTUNA_STATE[state])
        self.told.add(trial_id)
        self.outcomes.append(failure["reason"] if failure else None)
        if self.stop_reason is None:
            self.stop_reason = stop_message(self.outcomes, (failure or {}).get("error", ""), self.study_label)

    def save(self, checkpoint_path: str) -> None:
        """Which Optuna trial each Tune trial is, which were told and their reported epochs (Tune's experiment
        checkpoint; the study itself lives in its Optuna storage)."""
        state = {
            "trials": {tid: t.number for tid, t in self.trials.items()},
            "told": sorted(self.told),
            "steps": {tid: sorted(s) for tid, s in self.steps.items()},
        }
        Path(checkpoint_path).write_text(json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        """The Tune trials of a saved searcher, bound again to their Optuna trials."""
        state = json.loads(Path(checkpoint_path).read_text())
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.trials = {
            tid: optuna.Trial(
                self.study, self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
            )
            for tid, number in state["trials"].items()
        }
        self.told = set(state["told"])
        self.steps = {tid: set(s) for tid, s in state["steps"].items()}


def _set_attrs(trial: optuna.Trial, result: dict | None, failure: dict | None) -> None:
    """Final metrics (a trial that reported), the batch size used, and why a failed trial failed."""
    if result and SEARCH_METRIC in result and failure is None:
        final = TrialEpoch.from_result(result)
        for key, v in final.trial_attrs().items():
            trial.set_user_attr(key, v)
        trial.set_user_attr("pretrained", final.pretrained)
    batch = (failure or {}).get("batch_size") or (result or {}).get("batch_size")
    if batch:
        trial.set_user_attr(BATCH_SIZE_ATTR, int(batch))
    if failure:
        trial.set_user_attr(FAIL_REASON_ATTR, str(failure["reason"]))
        trial.set_user_attr(ERROR_ATTR, str(failure.get("error", ""))[:500])
