"""Ray Tune wiring: the sampler, ASHA on the per-epoch fold AUC, the driver's callbacks, the Tuner."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from search.guard.kill_points import kill_point
from search.stats.candidates import KEEP_MB, PER_FAMILY
from search.study import (
    COMPARISON_ATTR,
    FAMILY_ATTR,
    MLFLOW_RUN_ATTR,
    OPTUNA_NUMBER_KEY,
    StudyPaths,
    read_failure,
    trial_models,
)
from search.study.results import TrialEpoch
from search.tracking.outbox import TrackingOutbox
from search.tracking.run_notes import OPTUNA_NOTE, SCHEDULER_METRIC, SEARCH_METRIC
from search.tune.searcher import COMPLETE, trial_verdict


def name_metrics(study: optuna.Study) -> None:
    """Name the objective `cv_auc` (optuna-dashboard shows "Objective 0" otherwise) and note what the
    intermediate values are; for a new study and on every resume (studies from before this named nothing)."""
    if study.metric_names != [SEARCH_METRIC]:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.0: not the user's concern
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([SEARCH_METRIC])
    key, note = OPTUNA_NOTE
    if study.user_attrs.get(key) != note:
        study.set_user_attr(key, note)


def startup_trials(budget: int) -> int:
    """TPE's random start-up, sized to the budget: a fifth of it, at least 4 and at most 10 trials.

    A fixed start-up of 8 left a 20-trial search only 12 model-guided trials and a 10-trial one almost none;
    10 is Optuna's own default, which the large budgets keep.
    """
    return max(4, min(10, budget // 5))


def make_sampler(
    kind: str, seed: int, budget: int = 200, startup: int | None = None, constant_liar: bool = False
) -> optuna.samplers.BaseSampler:
    """TPE (default; start-up sized by `startup_trials` unless `startup` is given) or random sampling, seeded.
    `constant_liar`: TPE counts running trials as bad ones (bench.simulate compares it)."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup_trials(budget) if startup is None else startup,
        multivariate=True,
        group=True,
        constant_liar=constant_liar,
    )


def make_scheduler(kind: str, max_epochs: int, grace: int = 1, reduction: float = 3, brackets: int = 1):
    """ASHA on the per-epoch mean fold AUC (the study's comparison trials exempt), or every trial to the end."""
    if kind == "fifo":
        return FIFOScheduler()
    return ComparisonASHA(
        time_attr="training_iteration",
        metric=SCHEDULER_METRIC,
        mode="max",
        max_t=max_epochs,
        grace_period=min(grace, max_epochs),
        reduction_factor=reduction,
        brackets=brackets,
    )


class ComparisonASHA(ASHAScheduler):
    """Ray's ASHA, except that a trial of the study's comparison (config key `COMPARISON_ATTR`) is never stopped
    before its last epoch. Its results still enter the rungs, so later trials are measured against the
    study configurations as well as against each other."""

    def __init__(self, *args: Any, max_t: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, max_t=max_t, **kwargs)
        self.last_epoch = max_t

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        exempt = bool((getattr(trial, "config", None) or {}).get(COMPARISON_ATTR))
        if action == self.STOP and exempt and result.get("training_iteration", 0) < self.last_epoch:
            return self.CONTINUE
        return action


def trial_number(trial: Trial) -> int:
    """Optuna trial number of a Tune trial."""
    return int(trial.config.get(OPTUNA_NUMBER_KEY, -1))


class TrackingCallback(Callback):
    """Logs every trial to MLflow from the driver as it starts, reports and ends; notes its run on the trial.

    Through `search.tracking.outbox`: a tracking failure is kept and sent later, never raised into Tune, so no
    trial's state depends on tracking."""

    def __init__(
        self,
        outbox: TrackingOutbox,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        paths: StudyPaths,
        on_finish: Callable[..., None],
    ) -> None:
        self.outbox = outbox
        self.study = study
        self.storage = storage
        self.paths = paths
        self.on_finish = on_finish
        outbox.on_run = self.note_run

    def note_run(self, number: int, run_id: str) -> None:
        """Optuna's note of trial `number`'s MLflow run, once the run exists. A run made only after its trial
        ended (tracking failed meanwhile) is not noted: Optuna keeps a finished trial as it is; the run's
        `optuna_trial` tag links the two."""
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self._set_attrs(number, {MLFLOW_RUN_ATTR: run_id})

    def _set_attrs(self, number: int, attrs: dict[str, str]) -> None:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        try:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:  # not a trial of this study (no Optuna number): nothing to note
            return
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        self.outbox.poll()  # what tracking could not take, sent again when its retry is due

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        from trainers.backbones import family_of

        number = trial_number(trial)
        params = {k: v for k, v in trial.config.items() if k != OPTUNA_NUMBER_KEY}
        backbone = str(params.get("backbone", ""))
        family = family_of(backbone)
        self._set_attrs(number, {FAMILY_ATTR: family})
        self.outbox.start_trial(
            number, params, {"backbone": backbone, "family": family, "ray_trial_id": trial.trial_id}
        )

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        kill_point("trial_running")
        epoch = TrialEpoch.from_result(result)
        self.outbox.log_epoch(trial_number(trial), epoch.epoch, epoch.epoch_metrics())
        if epoch.epoch == 1 and result.get("node"):  # where this attempt runs (a restart may move it)
            self.outbox.tag_trial(trial_number(trial), {"node": result["node"]})

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        number = trial_number(trial)
        result = trial.last_result or {}
        state, failure = trial_verdict(result, read_failure(self.paths, number))  # as Optuna is told
        if failure:
            reason, error = str(failure["reason"]), str(failure.get("error", ""))
            self.outbox.finish_trial(number, "failed", None, error=error, tags=_failure_tags(failure))
            self.on_finish(trial, "failed", None, error, reason)
            return
        final = TrialEpoch.from_result(result) if SEARCH_METRIC in result else None
        tags = _batch_tags(trial, final.batch_size if final else 0)
        self.outbox.finish_trial(number, state, final, self.paths.oof(number), tags=tags)
        if state == COMPLETE:
            trial_models.keep_best(self.paths, PER_FAMILY, KEEP_MB)  # the deep ensemble's members
        self.on_finish(trial, state, final)

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        """Tune restarts the trial (its worker or node died): the same run goes on, tagged with the reason."""
        self.outbox.retry_trial(trial_number(trial), trial.num_failures, trial_error(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        number = trial_number(trial)
        _, failure = trial_verdict(trial.last_result, read_failure(self.paths, number), error=True)
        reason, error = str(failure["reason"]), trial_error(trial) or str(failure.get("error", ""))
        self.outbox.finish_trial(number, "failed", None, error=error, tags={"fail_reason": reason})
        self.on_finish(trial, "failed", None, error, reason)


def _failure_tags(failure: dict) -> dict[str, str]:
    """MLflow tags of a trial that failed on its own: the reason, the batch size it last tried, the traceback."""
    tags = {"fail_reason": str(failure["reason"]), "traceback": str(failure.get("traceback", ""))[-4000:]}
    if failure.get("batch_size"):
        tags["batch_size_used"] = str(failure["batch_size"])
    return tags


def _batch_tags(trial: Trial, used: int) -> dict[str, str]:
    """`batch_size_used` (and `oom_retry`) when out of memory made the trial train with a smaller batch."""
    sampled = trial.config.get("batch_size")
    if not used or used == sampled:
        return {}
    return {
        "batch_size_used": str(used),
        "oom_retry": f"batch size {sampled} ran out of memory; trained with {used}",
    }


def trial_error(trial: Trial) -> str:
    """The end of a trial's error file (every failure of the trial, one after another), or ""."""
    if not trial.error_file:
        return ""
    try:
        return open(trial.error_file).read()[-4000:]
    except OSError:
        return trial.error_file


def build_tuner(
    trainable: Callable,
    searcher: Searcher,
    scheduler: Any,
    num_samples: int,
    resources: dict[str, float],
    max_concurrent: int,
    storage_path: str,
    name: str,
    callbacks: list[Callback],
    max_retries: int = 1,
) -> tune.Tuner:
    """A Tuner whose trials each reserve `resources` (fractional GPUs allowed), results under the study folder.

    A trial whose worker or node dies is restarted from scratch up to `max_retries` times (it keeps its Tune
    trial, so its Optuna trial and MLflow run); after that it ends FAIL with the reason. Tune retries every
    failure of a trial alike, which is why the trainable catches its own errors (NaN loss, out of memory, ...)
    and ends without raising (`search.tune.failures`): those are not retried.
    """
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
            failure_config=tune.FailureConfig(max_failures=max_retries),
        ),
    )
