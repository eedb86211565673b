"""Ray Tune wiring: OptunaSearch that knows pruned trials, ASHA on the per-epoch fold AUC, driver callbacks."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search.guard.disk import free_space_problem
from search.guard.kill_points import kill_point
from search.stats.candidates import KEEP_MB, PER_FAMILY
from search.study import (
    BATCH_SIZE_ATTR,
    COMPARISON_ATTR,
    CONFIG_ATTR,
    ERROR_ATTR,
    FAIL_REASON_ATTR,
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
from search.tune import adapters
from search.tune.failures import WORKER_ERROR, stop_message
from trainers.metrics import is_finite

#: Optuna's intermediate value of a trial at step = epoch: the metric early stopping compares, so that the
#: dashboard's intermediate-values plot shows what ASHA saw (and tracking logs at the same steps).
INTERMEDIATE_METRIC = SCHEDULER_METRIC
TrialState = optuna.trial.TrialState


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


def trial_outcome(result: dict | None, error: bool) -> tuple[TrialState, float | None]:
    """How a finished Tune trial is told to Optuna: COMPLETE with its cv_auc only when its last report was
    its final epoch; PRUNED when the scheduler stopped it (or it never reported a value); FAIL on error."""
    value = result.get(SEARCH_METRIC) if result else None
    if error:
        return TrialState.FAIL, None
    if value is None or value != value or not result.get("final"):
        return TrialState.PRUNED, None  # Optuna keeps the last intermediate value
    return TrialState.COMPLETE, value


class StageSearch(OptunaSearch):
    """OptunaSearch that tags each config with its Optuna trial number, records early-stopped trials as PRUNED
    and trials that failed on their own as FAIL with the reason, and stops suggesting when failures say the
    setup is broken (`search.tune.failures`).

    Ray's OptunaSearch tells Optuna COMPLETE for a trial the scheduler stopped, with its low-fidelity value;
    here a trial counts as complete only if its last report was its final epoch (`trial_outcome`). Its
    intermediate values are `INTERMEDIATE_METRIC` (what ASHA compares), not the objective `metric`.
    `study_dir`: where trials write `trials/<number>/failure.json`.
    """

    def __init__(
        self, *args: Any, study_dir: str | None = None, study_label: str = "", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.paths = StudyPaths(Path(study_dir)) if study_dir else None
        self.study_label = study_label
        self.outcomes: list[str | None] = []  # this session's finished trials: failure reason or None
        self.stop_reason: str | None = None

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.stop_reason is None and self.paths is not None:
            self.stop_reason = free_space_problem(self.paths.root, self.study_label)  # `search.guard.disk`
        if self.stop_reason:
            return Searcher.FINISHED
        params = super().suggest(trial_id)
        if params is not None:
            trial = adapters.optuna_trial(self, trial_id)
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
        steps = self._steps().setdefault(trial_id, set())
        ot_trial = adapters.optuna_trial(self, trial_id)
        if ot_trial is None or step in steps or adapters.is_completed(self, trial_id) or not is_finite(value):
            return
        ot_trial.report(float(value), int(step))
        steps.add(step)

    def _steps(self) -> dict[str, set]:
        if not hasattr(self, "_reported_steps"):
            self._reported_steps: dict[str, set] = {}
        return self._reported_steps

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = adapters.optuna_trial(self, trial_id)
        if ot_trial is None or adapters.is_completed(self, trial_id):
            return
        self._report(
            trial_id, result
        )  # a scheduler's stop arrives here without on_trial_result: that epoch too
        failure = read_failure(self.paths, ot_trial.number) if self.paths else None
        if error and failure is None:
            failure = {
                "reason": WORKER_ERROR,
                "error": "the trial's process failed (see the MLflow run's error tag)",
            }
        state, value = trial_outcome(result, failure is not None)
        self._set_attrs(ot_trial, result, failure)
        kill_point("before_optuna_tell")
        adapters.optuna_study(self).tell(ot_trial, value, state=state)
        adapters.mark_completed(self, trial_id)
        self.outcomes.append(failure["reason"] if failure else None)
        if self.stop_reason is None:
            self.stop_reason = stop_message(self.outcomes, (failure or {}).get("error", ""), self.study_label)

    @staticmethod
    def _set_attrs(ot_trial: optuna.Trial, result: dict | None, failure: dict | None) -> None:
        """Final metrics (a trial that reported), the batch size used, and why a failed trial failed."""
        if result and SEARCH_METRIC in result and failure is None:
            final = TrialEpoch.from_result(result)
            for key, v in final.trial_attrs().items():
                ot_trial.set_user_attr(key, v)
            ot_trial.set_user_attr("pretrained", final.pretrained)
        batch = (failure or {}).get("batch_size") or (result or {}).get("batch_size")
        if batch:
            ot_trial.set_user_attr(BATCH_SIZE_ATTR, int(batch))
        if failure:
            ot_trial.set_user_attr(FAIL_REASON_ATTR, str(failure["reason"]))
            ot_trial.set_user_attr(ERROR_ATTR, str(failure.get("error", ""))[:500])


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
        failure = read_failure(self.paths, number)
        if failure:
            reason, error = str(failure["reason"]), str(failure.get("error", ""))
            self.outbox.finish_trial(number, "failed", None, error=error, tags=_failure_tags(failure))
            self.on_finish(trial, "failed", None, error, reason)
            return
        result = trial.last_result or {}
        final = TrialEpoch.from_result(result) if SEARCH_METRIC in result else None
        state = "complete" if final and final.final else "pruned"
        tags = _batch_tags(trial, final.batch_size if final else 0)
        self.outbox.finish_trial(number, state, final, self.paths.oof(number), tags=tags)
        if state == "complete":
            trial_models.keep_best(self.paths, PER_FAMILY, KEEP_MB)  # the deep ensemble's members
        self.on_finish(trial, state, final)

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        """Tune restarts the trial (its worker or node died): the same run goes on, tagged with the reason."""
        self.outbox.retry_trial(trial_number(trial), trial.num_failures, trial_error(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        error = trial_error(trial)
        tags = {"fail_reason": WORKER_ERROR}
        self.outbox.finish_trial(trial_number(trial), "failed", None, error=error, tags=tags)
        self.on_finish(trial, "failed", None, error, WORKER_ERROR)


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
    searcher: StageSearch,
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
