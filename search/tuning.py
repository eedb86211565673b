"""Ray Tune wiring: OptunaSearch that knows pruned trials, ASHA on the per-epoch fold AUC, driver callbacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from search.tracking import StudyTracker, final_from_result
from search.trainable import OPTUNA_NUMBER_KEY

SEARCH_METRIC = "cv_auc"  # pooled out-of-fold AUC: what Optuna optimises
SCHEDULER_METRIC = "mean_fold_auc"  # per-epoch mean fold AUC: what ASHA compares


class StageSearch(OptunaSearch):
    """OptunaSearch that tags each config with its Optuna trial number and records early-stopped trials as PRUNED.

    Ray's OptunaSearch tells Optuna COMPLETE for a trial the scheduler stopped, with its low-fidelity value;
    here a trial counts as complete only if its last report was its final epoch.
    """

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is not None:
            params[OPTUNA_NUMBER_KEY] = self._ot_trials[trial_id].number
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        self._steps().setdefault(trial_id, set()).add(result.get("training_iteration"))

    def _steps(self) -> dict[str, set]:
        if not hasattr(self, "_reported_steps"):
            self._reported_steps: dict[str, set] = {}
        return self._reported_steps

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = result.get(self.metric) if result else None
        step = result.get("training_iteration") if result else None
        if value is not None and value == value and step not in self._steps().get(trial_id, set()):
            # A scheduler's stop decision arrives here without on_trial_result: record that epoch too.
            ot_trial.report(value, step)
        if error or value is None or value != value:
            state, value = (optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED), None
        elif result.get("final"):
            state = optuna.trial.TrialState.COMPLETE
        else:
            state, value = optuna.trial.TrialState.PRUNED, None  # Optuna keeps the last intermediate value
        if result:
            final = final_from_result(result)
            for key in (
                "accuracy",
                "precision",
                "recall",
                "f1",
                "fold_auc_mean",
                "fold_auc_sd",
                "epochs_completed",
            ):
                if key in final["metrics"]:
                    ot_trial.set_user_attr(key, final["metrics"][key])
            ot_trial.set_user_attr("pretrained", final["pretrained"])
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (default) or random sampling, seeded."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True, group=True)


def make_scheduler(kind: str, max_epochs: int, grace: int = 1, reduction: float = 3):
    """ASHA on the per-epoch mean fold AUC, or run every trial to the end (FIFO)."""
    if kind == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=SCHEDULER_METRIC,
        mode="max",
        max_t=max_epochs,
        grace_period=min(grace, max_epochs),
        reduction_factor=reduction,
    )


def trial_number(trial: Trial) -> int:
    """Optuna trial number of a Tune trial."""
    return int(trial.config.get(OPTUNA_NUMBER_KEY, -1))


class TrackingCallback(Callback):
    """Logs every trial to MLflow from the driver as it starts, reports and ends."""

    def __init__(self, tracker: StudyTracker, study: optuna.Study, on_finish: Callable[..., None]) -> None:
        self.tracker = tracker
        self.study = study
        self.on_finish = on_finish

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        number = trial_number(trial)
        params = {k: v for k, v in trial.config.items() if k != OPTUNA_NUMBER_KEY}
        from trainers.backbones import family_of

        backbone = str(params.get("backbone", ""))
        run_id = self.tracker.start_trial(
            number,
            params,
            {"backbone": backbone, "family": family_of(backbone), "ray_trial_id": trial.trial_id},
        )
        try:
            self.study._storage.set_trial_user_attr(
                self.study.trials[number]._trial_id, "mlflow_run_id", run_id
            )
        except (IndexError, KeyError):
            pass

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        keys = ("mean_fold_auc", "cv_auc", "train_loss", "accuracy", "f1")
        self.tracker.log_epoch(trial_number(trial), int(result.get("epoch", 0)), {k: result[k] for k in keys})

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        result = trial.last_result or {}
        state = "complete" if result.get("final") else "pruned"
        final = final_from_result(result) if result else None
        self.tracker.finish_trial(trial_number(trial), state, final)
        self.on_finish(trial, state, final)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        error = ""
        if trial.error_file:
            try:
                error = open(trial.error_file).read()[-4000:]
            except OSError:
                error = trial.error_file
        self.tracker.finish_trial(trial_number(trial), "failed", None, error)
        self.on_finish(trial, "failed", None, error)


def build_tuner(
    trainable: Callable,
    searcher: StageSearch,
    scheduler: Any,
    num_samples: int,
    resources: dict[str, float],
    max_concurrent: int,
    storage_path: str,
    name: str,
    callbacks: list[Callback],
) -> tune.Tuner:
    """A Tuner whose trials each reserve `resources` (fractional GPUs allowed), results under the study folder."""
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent or None,
            reuse_actors=True,  # a trial worker process is reused: imports and CUDA set-up paid once
        ),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage_path,
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
