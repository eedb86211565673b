"""What the study's two AUCs mean, said the same way in Optuna (a study note) and in MLflow (the descriptions
the UI shows on the study's experiment, its search run and each trial run).

MLflow keeps a run's description in the tag `mlflow.note.content` and shows it as markdown on the run's page
and in the runs table's "Description" column; an experiment's description is the same tag on the experiment.
Imports nothing (the dashboards' launchers use it without MLflow, Ray or the trainers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEARCH_METRIC = "cv_auc"  # pooled out-of-fold AUC: what Optuna optimises
SCHEDULER_METRIC = "mean_fold_auc"  # per-epoch mean fold AUC: what ASHA compares, Optuna's intermediate value
#: `mlflow.utils.mlflow_tags.MLFLOW_RUN_NOTE` (a test checks they agree).
NOTE_TAG = "mlflow.note.content"
#: Experiment tag the MLflow 3 UI reads to choose the experiment's page: with "custom_model_development" it
#: opens the runs table ("Machine learning") instead of the GenAI overview of traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: Suffix of a pruned trial's run name: the runs table shows it in its first column. Its status stays
#: FINISHED (a green tick): the UI draws KILLED with the same red cross as FAILED, and a pruned trial did not fail.
PRUNED_SUFFIX = "-pruned"
#: Fewer complete trials and parameter importances (fANOVA's forest) fit noise: two trials gave "lr 1.00".
MIN_TRIALS_FOR_IMPORTANCE = 10

METRICS = """\
Metrics:
- `cv_auc`: pooled out-of-fold patient-level AUC of the trial's k fold models; the objective Optuna maximises
  (a complete trial's final value is its `cv_auc` at the last epoch).
- `mean_fold_auc`: mean of the k fold AUCs; what early stopping (ASHA) compares after each epoch, and the
  trial's intermediate value in Optuna (a pruned trial's value there is its last `mean_fold_auc`).
- Per-epoch curves are logged at step = epoch; the final metrics at the last epoch's step."""


#: Study user attribute (key, text) that says what the Optuna values are; optuna-dashboard lists it.
OPTUNA_NOTE = (
    "metrics",
    f"objective {SEARCH_METRIC}: pooled out-of-fold patient-level AUC of the trial's k fold models at its last "
    f"epoch (a pruned trial's value is its last intermediate value instead); intermediate values: "
    f"{SCHEDULER_METRIC} at step = epoch, the mean of the k fold AUCs, which early stopping (ASHA) compares",
)


def experiment_note(study: str) -> str:
    """Description of the study's experiment."""
    return (
        f"Hyperparameter search `{study}`: the run `search` is the study (settings as parameters, summary as "
        f"metrics), its nested runs `trial-NNNN` are the trials (suffix `{PRUNED_SUFFIX}` when early stopping "
        f"ended them), `model-trial-NNNN` the registered winner.\n\n{METRICS}"
    )


def parent_note(study: str, params: Mapping[str, Any]) -> str:
    """Description of the search's parent run from its parameters (the study's settings)."""
    get = params.get
    early = (
        "ASHA on `mean_fold_auc` (grace and reduction as set on the command line)"
        if get("scheduler", "asha") != "fifo"
        else "none (every trial runs all its epochs)"
    )
    lines = [
        f"Search of study `{study}`: space `{get('space', '?')}`, budget {get('budget', '?')} trials, sampler "
        f"{get('sampler', 'tpe')}, up to {get('max_epochs', '?')} epochs a trial, {get('folds', '?')}-fold "
        f"patient-grouped cross-validation, seed {get('seed', '?')}.",
        f"Early stopping: {early}.",
        "Each nested run is one trial (its Optuna trial number in the tag `optuna_trial`, its outcome in the tag "
        f"`state`: complete, pruned or failed; a pruned trial's run name ends in `{PRUNED_SUFFIX}`).",
        "This run's metrics summarise the search (`best_cv_auc`, trial counts, estimates).",
        "",
        METRICS,
    ]
    return "\n".join(lines)


def trial_note(number: int, params: Mapping[str, Any], outcome: str = "") -> str:
    """Description of trial `number`'s run; `outcome` (a line) once it ended."""
    what = ", ".join(
        f"{k}={params[k]}" for k in ("backbone", "resolution", "lr", "batch_size") if k in params
    )
    head = f"Trial {number} ({what})." if what else f"Trial {number}."
    return "\n\n".join(part for part in (head, outcome, METRICS) if part)


def outcome_line(
    state: str,
    epochs: int,
    max_epochs: int | None,
    cv_auc: float | None,
    mean_fold_auc: float | None,
    error: str = "",
) -> str:
    """One line on how a trial ended, in the metric names above."""
    of = f" of {max_epochs}" if max_epochs else ""
    if state == "complete":
        return f"Complete: {epochs}{of} epochs, cv_auc {_num(cv_auc)}, mean_fold_auc {_num(mean_fold_auc)}."
    if state == "pruned":
        return (
            f"Pruned: early stopping ended it after epoch {epochs}{of} (mean_fold_auc {_num(mean_fold_auc)}); "
            f"its cv_auc {_num(cv_auc)} at that epoch is not a final value."
        )
    if state == "failed":
        reason = error.strip().splitlines()[-1] if error.strip() else "see the tag `error`"
        return f"Failed: {reason[:300]}"
    return f"Ended: {state}."


def _num(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"
