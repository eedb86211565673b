"""MLflow tracking from the driver: one experiment per study, a parent run, one nested child run per trial.

Everything is logged by the driver process through explicit run ids (never the fluent "active run"), so
trials on remote workers cannot lose or un-nest runs (ray#19978, ray#36257), and a remote tracking server
needs no credentials on the workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from search.study import TRACKING_ENV, public, read_oof, reveal
from search.study.results import SAME_AS_EPOCH, TrialEpoch
from search.tracking.figures import figure_roc, roc_points
from search.tracking.run_notes import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    PRUNED_SUFFIX,
    experiment_note,
    outcome_line,
    parent_note,
    trial_note,
)
from trainers.metrics import is_finite

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SUMMARY_STEP_TAG = "summary_step"


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to `uri` inside the block, and afterwards exactly as before: unset when it
    was unset (so MLFLOW_TRACKING_URI set later still counts), and the variable as it was."""
    env_before = os.environ.get(TRACKING_URI_ENV)
    current = mlflow.get_tracking_uri()
    explicit = current if mlflow.is_tracking_uri_set() and current != env_before else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(explicit)  # None unsets the global URI and the variable
        if env_before is not None:
            os.environ[TRACKING_URI_ENV] = env_before


class StudyTracker:
    """Opens (or reopens) the study's experiment and parent run and logs trials as nested children.

    Every metric key of a run is logged at strictly increasing steps: a trial's curves at step = epoch, its
    final metrics once, at its last epoch's step (at step 0 after epochs 1..n they drew V-shaped charts).
    """

    def __init__(self, tracking_uri: str, study: str, artifact_dir: Path | None = None) -> None:
        self.tracking_uri = public(tracking_uri)  # what Ray pickles: the password, if any, as ***
        self.client = MlflowClient(tracking_uri=reveal(self.tracking_uri, TRACKING_ENV))
        exp = self.client.get_experiment_by_name(study)
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: experiment_note(study)}
        if exp is None:
            location = artifact_dir.resolve().as_uri() if artifact_dir is not None else None
            self.experiment_id = self.client.create_experiment(study, artifact_location=location, tags=tags)
        else:
            self.experiment_id = exp.experiment_id
            for (
                key,
                value,
            ) in tags.items():  # an experiment from before these tags, or a GenAI kind set by hand
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        self.study = study
        self.max_epochs: int | None = None
        self.parent_run_id: str | None = None
        self.children: dict[int, str] = {}  # optuna trial number -> run id
        self.params: dict[int, dict[str, Any]] = {}  # optuna trial number -> its sampled configuration
        self.last_step: dict[int, int] = {}  # optuna trial number -> last epoch logged to its run

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # Ray pickles callbacks with the Tuner: keep ids, not connections
        state.pop("client", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=reveal(self.tracking_uri, TRACKING_ENV))

    def open_parent(self, parent_run_id: str | None, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Reuse the parent run of an earlier session of this study, or start one; its description says what
        the study searches and what its metrics mean (a resumed session may have a new budget)."""
        self.max_epochs = int(params["max_epochs"]) if params.get("max_epochs") else None
        note = RunTag(NOTE_TAG, parent_note(self.study, params))
        if parent_run_id:
            self.client.update_run(parent_run_id, status="RUNNING")
            self.parent_run_id = parent_run_id
            self.client.log_batch(parent_run_id, tags=[note])
        else:
            run = self.client.create_run(
                self.experiment_id, run_name="search", tags={"role": "search", **tags, NOTE_TAG: note.value}
            )
            self.parent_run_id = run.info.run_id
            self.client.log_batch(
                self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()]
            )
        return self.parent_run_id

    def close_stale_children(self, finished: dict[int, tuple[str, dict[str, float]]] | None = None) -> int:
        """Close runs left RUNNING by a stopped or killed search; returns how many became KILLED.

        A trial can end in Optuna just before the search is killed and before its run is closed here:
        `finished` (Optuna trial number -> state and final metrics) closes those as finished instead.
        """
        runs = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING' and tags.role = 'trial'"
        )
        killed = 0
        for run in runs:
            number = int(run.data.tags.get("optuna_trial", -1))
            if finished and number in finished:
                state, metrics = finished[number]
                self.client.log_batch(
                    run.info.run_id,
                    metrics=self._recovered(run, metrics),
                    tags=[
                        RunTag("state", state),
                        RunTag(
                            "note", "ended as the search was stopped; final metrics recovered from Optuna"
                        ),
                    ],
                )
                if state == "pruned":
                    self.client.update_run(run.info.run_id, name=run.info.run_name + PRUNED_SUFFIX)
                self.client.set_terminated(run.info.run_id, status="FINISHED")
            else:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                killed += 1
        return killed

    def _recovered(self, run: Any, metrics: dict[str, float]) -> list[Metric]:
        """Final metrics recovered from Optuna for a run left open, at the trial's last epoch: each key only where
        that step is past what the run holds of it (steps stay strictly increasing)."""
        step = int(metrics.get("epochs_completed") or 0)
        now = int(time.time() * 1000)
        out = []
        for name, value in metrics.items():
            key = SAME_AS_EPOCH.get(name, name)  # Optuna's fold_auc_mean is tracking's mean_fold_auc
            if not is_finite(value):
                continue
            if key in run.data.metrics:
                logged = max(
                    (m.step for m in self.client.get_metric_history(run.info.run_id, key)), default=-1
                )
                if logged >= step:
                    continue
            out.append(Metric(key, float(value), now, step))
        return out

    def start_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> str:
        """A nested child run for Optuna trial `number`; a trial that Tune restarts keeps its run. Safe to call
        again after a failure part-way (`search.tracking.outbox` does): the run is made once, its params
        logged once."""
        if number not in self.children:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{number:04d}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "role": "trial",
                    "optuna_trial": str(number),
                    NOTE_TAG: trial_note(number, params),
                    **tags,
                },
            )
            self.children[number] = run.info.run_id
        run_id = self.children[number]
        if number not in self.params:
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self.params[number] = dict(params)
        return run_id

    def retry_trial(self, number: int, failures: int, error: str) -> None:
        """Note on trial `number`'s run that it failed (`failures` times so far) and starts again from scratch
        (its run keeps the first attempt's epoch curves, `log_epoch`)."""
        reason = error.strip().splitlines()[-1] if error.strip() else "see the Ray trial log"
        self.tag_trial(number, {"retries": str(failures), f"retry_{failures}_reason": reason})

    def tag_trial(self, number: int, tags: dict[str, str]) -> None:
        """Set tags on trial `number`'s run (e.g. the node it runs on)."""
        if number in self.children:
            self.client.log_batch(
                self.children[number], tags=[RunTag(k, str(v)[:4000]) for k, v in tags.items()]
            )

    def log_epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch metrics of a trial (step = epoch). A trial that Tune restarted reports its epochs again:
        the run keeps the first report of each epoch (as Optuna does), so its steps stay strictly increasing."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items() if is_finite(v)]
        if number in self.children and batch and epoch > self.last_step.get(number, 0):
            self.client.log_batch(self.children[number], metrics=batch)
            self.last_step[number] = epoch

    def finish_trial(
        self,
        number: int,
        state: str,
        final: TrialEpoch | None,
        oof: Path | None = None,
        error: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        """Final metrics at the last epoch's step, the trial's out-of-fold table and ROC curve as artifacts, state,
        `tags` and a description of the outcome, run closed (FAILED for a failed trial, with its error text as
        the `error` tag; a pruned trial's run name gets `PRUNED_SUFFIX`)."""
        run_id = self.children.get(number)
        if run_id is None:
            return
        run_tags = [RunTag("state", state), *(RunTag(k, str(v)) for k, v in (tags or {}).items() if v)]
        if error:
            run_tags.append(RunTag("error", error[:4000]))
        metrics = []
        if final:
            self.log_epoch(number, final.epoch, final.epoch_metrics())  # no-op when the callback logged it
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, final.epoch) for k, v in final.tracked_final_metrics().items()]
            run_tags.append(RunTag("pretrained", str(final.pretrained).lower()))
            if final.pretrained_note:
                run_tags.append(RunTag("pretrained_note", final.pretrained_note))
        outcome = outcome_line(
            state,
            final.epoch if final else self.last_step.get(number, 0),
            self.max_epochs,
            final.cv_auc if final else None,
            final.mean_fold_auc if final else None,
            error,
        )
        run_tags.append(RunTag(NOTE_TAG, trial_note(number, self.params.get(number, {}), outcome)))
        self.client.log_batch(run_id, metrics=metrics, tags=run_tags)
        if state == "pruned":
            self.client.update_run(run_id, name=f"trial-{number:04d}{PRUNED_SUFFIX}")
        if final and oof is not None and oof.exists():
            with tempfile.TemporaryDirectory() as tmp:
                for path in write_trial_artifacts(Path(tmp), oof, f"trial {number}"):
                    self.client.log_artifact(run_id, str(path))
        status = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}.get(state, "KILLED")
        self.client.set_terminated(run_id, status=status)

    def log_parent_summary(self, metrics: dict[str, float], tags: dict[str, str], status: str) -> None:
        """Best-so-far figures and counts on the parent run, at step = the search session (1, 2, ... with
        --resume; the tag `summary_step` counts them), so a resumed study's summary curves step forward too."""
        now = int(time.time() * 1000)
        step = int(self.client.get_run(self.parent_run_id).data.tags.get(SUMMARY_STEP_TAG, "0")) + 1
        self.client.log_batch(
            self.parent_run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items() if is_finite(v)],
            tags=[*(RunTag(k, str(v)) for k, v in tags.items()), RunTag(SUMMARY_STEP_TAG, str(step))],
        )
        self.client.set_terminated(
            self.parent_run_id, status=RunStatus.to_string(RunStatus.from_string(status))
        )


def write_trial_artifacts(folder: Path, oof: Path, title: str) -> list[Path]:
    """`oof_predictions.csv` (a copy of the trial's table) and `roc_curve.png` of its pooled predictions."""
    folder.mkdir(parents=True, exist_ok=True)
    table = Path(shutil.copy(oof, folder / "oof_predictions.csv"))
    points = roc_points(read_oof(oof) or [])
    curves = {"oof": points} if points else {}
    roc = figure_roc(
        curves, {"oof": "pooled out-of-fold"}, f"ROC, {title}", folder / "roc_curve.png", size=4.5
    )
    return [table, roc]
