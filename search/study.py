"""The study folder `runs/<study>/`: what one search made, and how a later run finds and continues it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

INTERRUPTED_ATTR = "interrupted"


@dataclass(frozen=True)
class StudyPaths:
    """Every file a study writes, under one folder (the MLflow store lives one level up, shared)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def folds(self) -> Path:
        return self.root / "folds.json"

    @property
    def holdout(self) -> Path:
        return self.root / "holdout.json"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def trials(self) -> Path:
        return self.root / "trials"


def default_storage_url(paths: StudyPaths) -> str:
    """sqlite Optuna storage inside the study folder."""
    return f"sqlite:///{paths.optuna_db.resolve()}"


def default_tracking_uri(runs_dir: Path) -> str:
    """A sqlite MLflow store shared by all studies of a runs folder (so one registry holds them all)."""
    return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"


def latest_study(runs_dir: Path) -> str | None:
    """Name of the most recently started study in `runs_dir` (for a bare `--resume`)."""
    configs = sorted(runs_dir.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return configs[-1].parent.name if configs else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict ({} when absent)."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state; `finished` counts what spends the budget (complete, pruned, failed by error)."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == optuna.trial.TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == optuna.trial.TrialState.FAIL:
            counts["interrupted" if t.user_attrs.get(INTERRUPTED_ATTR) else "failed"] += 1
        elif t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
            counts["running"] += 1
    counts["finished"] = counts["complete"] + counts["pruned"] + counts["failed"]
    return counts


def close_stale_trials(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by an interrupted or killed search as failed-interrupted; return their numbers."""
    closed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED_ATTR, time.strftime("%Y-%m-%dT%H:%M:%S"))
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        closed.append(t.number)
    return closed


def finished_trials(study: optuna.Study) -> dict[int, tuple[str, dict[str, float]]]:
    """Complete and pruned trials as number -> (state, final metrics), for closing their tracking runs."""
    out = {}
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        metrics = {
            k: v for k, v in t.user_attrs.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if t.value is not None:
            metrics["cv_auc"] = t.value
        out[t.number] = ("complete" if t.state == optuna.trial.TrialState.COMPLETE else "pruned", metrics)
    return out
