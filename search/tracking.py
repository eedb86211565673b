"""MLflow tracking from the driver: one experiment per study, a parent run, one nested child run per trial.

Everything is logged by the driver process through explicit run ids (never the fluent "active run"), so
trials on remote workers cannot lose or un-nest runs (ray#19978, ray#36257), and a remote tracking server
needs no credentials on the workers.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

PARENT_RUN_ATTR = "mlflow_parent_run_id"


class StudyTracker:
    """Opens (or reopens) the study's experiment and parent run and logs trials as nested children."""

    def __init__(self, tracking_uri: str, study: str, artifact_dir: Path | None = None) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        exp = self.client.get_experiment_by_name(study)
        if exp is None:
            location = artifact_dir.resolve().as_uri() if artifact_dir is not None else None
            self.experiment_id = self.client.create_experiment(study, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.parent_run_id: str | None = None
        self.children: dict[int, str] = {}  # optuna trial number -> run id

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # Ray pickles callbacks with the Tuner: keep ids, not connections
        state.pop("client", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def open_parent(self, parent_run_id: str | None, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Reuse the parent run of an earlier session of this study, or start one."""
        if parent_run_id:
            self.client.update_run(parent_run_id, status="RUNNING")
            self.parent_run_id = parent_run_id
        else:
            run = self.client.create_run(
                self.experiment_id, run_name="search", tags={"role": "search", **tags}
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
                now = int(time.time() * 1000)
                self.client.log_batch(
                    run.info.run_id,
                    metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)],
                    tags=[RunTag("state", state),
                          RunTag("note", "ended as the search was stopped; final metrics recovered from Optuna")],
                )  # fmt: skip
                self.client.set_terminated(run.info.run_id, status="FINISHED")
            else:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                killed += 1
        return killed

    def start_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> str:
        """A nested child run for Optuna trial `number`."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:04d}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "role": "trial",
                "optuna_trial": str(number),
                **tags,
            },
        )
        run_id = run.info.run_id
        self.children[number] = run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run_id

    def log_epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch metrics of a trial (step = epoch)."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items() if _finite(v)]
        if number in self.children and batch:
            self.client.log_batch(self.children[number], metrics=batch)

    def finish_trial(self, number: int, state: str, final: dict[str, Any] | None, error: str = "") -> None:
        """Final metrics, out-of-fold predictions and ROC curve as artifacts, state tag, run closed."""
        run_id = self.children.get(number)
        if run_id is None:
            return
        tags = [RunTag("state", state)]
        if error:
            tags.append(RunTag("error", error[:4000]))
        metrics = []
        if final:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, 0) for k, v in final["metrics"].items() if _finite(v)]
            tags.append(RunTag("pretrained", str(final.get("pretrained", False)).lower()))
            if final.get("pretrained_note"):
                tags.append(RunTag("pretrained_note", final["pretrained_note"]))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        if final and final.get("oof"):
            with tempfile.TemporaryDirectory() as tmp:
                for path in write_trial_artifacts(Path(tmp), final["oof"], f"trial {number}"):
                    self.client.log_artifact(run_id, str(path))
        status = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}.get(state, "KILLED")
        self.client.set_terminated(run_id, status=status)

    def log_parent_summary(self, metrics: dict[str, float], tags: dict[str, str], status: str) -> None:
        """Best-so-far figures and counts on the parent run."""
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(
            self.parent_run_id, status=RunStatus.to_string(RunStatus.from_string(status))
        )


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def write_trial_artifacts(folder: Path, oof: list[dict[str, Any]], title: str) -> list[Path]:
    """`oof_predictions.csv` and `roc_curve.png` for one trial's pooled out-of-fold predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "oof_predictions.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["patient_id", "label", "prob", "fold"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in oof)
    y = [r["label"] for r in oof]
    p = [r["prob"] for r in oof]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    if len(set(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2, label=f"pooled out-of-fold AUC = {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {title}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    roc = folder / "roc_curve.png"
    fig.savefig(roc)
    plt.close(fig)
    return [table, roc]


def final_from_result(result: dict[str, Any]) -> dict[str, Any]:
    """The final metrics, out-of-fold table and pretrained flag a trial reported last."""
    metrics = json.loads(result.get("metrics_json", "{}"))
    fold_auc = json.loads(result.get("fold_auc_json", "[]"))
    valid = [a for a in fold_auc if a is not None and _finite(a)]
    if valid:
        mean = sum(valid) / len(valid)
        metrics["fold_auc_mean"] = mean
        if len(valid) > 1:
            metrics["fold_auc_sd"] = math.sqrt(sum((a - mean) ** 2 for a in valid) / (len(valid) - 1))
    metrics["cv_auc"] = result.get("cv_auc", math.nan)
    metrics["epochs_completed"] = result.get("epoch", 0)
    return {
        "metrics": metrics,
        "oof": json.loads(result.get("oof_json", "[]")),
        "pretrained": bool(result.get("pretrained", False)),
        "pretrained_note": result.get("pretrained_note", ""),
    }
