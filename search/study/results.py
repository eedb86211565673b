"""What a trial reports to Tune after each epoch, and how the driver reads it back: one typed schema, both sides.

A report holds scalars only; the trial's out-of-fold table goes to the study folder (`trials/<n>/oof.csv`),
not through Ray's results.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from trainers.metrics import fold_spread, is_finite

#: Final metrics stored on the Optuna trial (user attributes) and shown by the report and the leaderboard.
TRIAL_ATTRS = ("accuracy", "precision", "recall", "f1", "fold_auc_mean", "fold_auc_sd", "epochs_completed")
METRICS_PREFIX = "metrics/"
#: Metrics logged to MLflow at every epoch (step = epoch).
EPOCH_METRICS = ("mean_fold_auc", "cv_auc", "train_loss", "accuracy", "f1")
#: Final metrics that repeat an epoch metric under another name (Optuna's user attribute `fold_auc_mean` is
#: the last epoch's `mean_fold_auc`): tracking logs each value under one name only.
SAME_AS_EPOCH = {"fold_auc_mean": "mean_fold_auc"}
#: Decimal places kept of an AUC or a rate (`exact`).
DIGITS = 12


def exact(value: float) -> float:
    """`value` rounded to `DIGITS` decimal places: 0.45000000000000007 (floating-point residue of the ROC
    integration) becomes 0.45, the same number everywhere it is shown (Tune, Optuna, tracking, the report).

    Rounding loses nothing: a pooled AUC on p positive and n negative patients is a multiple of 1/(2pn), and
    accuracy, precision, recall and F1 are ratios of counts of at most 2N (N patients), so two different values
    of any of them differ by at least 1/(4N^2), more than 1e-11 below 100,000 patients; the residue removed is
    below 1e-15. The mean of k fold AUCs is the one value whose distinct levels could in principle come closer
    than 1e-12 (very large folds): trials that close are tied for every purpose, early stopping included.
    """
    return round(float(value), DIGITS) if math.isfinite(value) else float(value)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    """The entries of `values` that are finite numbers (`trainers.metrics.is_finite`), as floats."""
    return {key: float(value) for key, value in values.items() if is_finite(value)}


@dataclass(frozen=True)
class TrialEpoch:
    """One epoch of a trial's k folds: the pooled `cv_auc` (Optuna's metric), the mean fold AUC (ASHA's)."""

    epoch: int
    final: bool
    cv_auc: float
    mean_fold_auc: float
    fold_auc_sd: float
    train_loss: float
    metrics: dict[str, float]
    pretrained: bool
    pretrained_note: str
    batch_size: int = (
        0  # what the epoch trained with (half the sampled batch size after running out of memory)
    )

    @classmethod
    def from_epoch(cls, report: Any, epochs: int) -> TrialEpoch:
        """From the trainer's `EpochReport` of a run of `epochs` epochs (NaN metrics dropped)."""
        mean = float(report.mean_fold_auc)
        return cls(
            epoch=int(report.epoch),
            final=report.epoch == epochs,
            cv_auc=exact(report.cv_auc),
            mean_fold_auc=exact(mean)
            if math.isfinite(mean)
            else 0.5,  # a fold with one class: neither better nor worse
            fold_auc_sd=fold_spread(report.fold_auc)[1],
            train_loss=float(report.train_loss),
            metrics={k: exact(v) for k, v in _finite(report.metrics).items() if k != "auc"},
            pretrained=bool(report.pretrained),
            pretrained_note=str(report.pretrained_note),
            batch_size=int(getattr(report, "batch_size", 0)),
        )

    def to_result(self) -> dict[str, Any]:
        """The flat dict given to `tune.report`: scalars, the metrics as `metrics/<name>` (how Tune flattens)."""
        flat = {k: v for k, v in asdict(self).items() if k != "metrics"}
        return {**flat, **{f"{METRICS_PREFIX}{k}": v for k, v in self.metrics.items()}}

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> TrialEpoch:
        """Back from a Tune result (which also carries Tune's own keys), flat or nested."""
        metrics = {k[len(METRICS_PREFIX) :]: v for k, v in result.items() if k.startswith(METRICS_PREFIX)}
        metrics.update(result.get("metrics") or {})
        fields = [k for k in cls.__dataclass_fields__ if k not in ("metrics", "batch_size")]
        return cls(
            metrics=metrics, batch_size=int(result.get("batch_size") or 0), **{k: result[k] for k in fields}
        )

    def epoch_metrics(self) -> dict[str, float]:
        """The per-epoch curves logged to tracking."""
        values = {
            "mean_fold_auc": self.mean_fold_auc,
            "cv_auc": self.cv_auc,
            "train_loss": self.train_loss,
            **self.metrics,
        }
        return _finite({k: values[k] for k in EPOCH_METRICS if k in values})

    def final_metrics(self) -> dict[str, float]:
        """Everything numeric this epoch says, as the trial's final record (finite values only)."""
        return _finite(
            {
                **self.metrics,
                "cv_auc": self.cv_auc,
                "fold_auc_mean": self.mean_fold_auc,
                "fold_auc_sd": self.fold_auc_sd,
                "epochs_completed": self.epoch,
            }
        )

    def tracked_final_metrics(self) -> dict[str, float]:
        """The final metrics that tracking logs beside the epoch curves (at the last epoch's step): the ones no
        epoch metric already holds, so every value is logged once, under one name."""
        epoch = self.epoch_metrics()
        return {k: v for k, v in self.final_metrics().items() if k not in epoch and k not in SAME_AS_EPOCH}

    def trial_attrs(self) -> dict[str, float]:
        """The final metrics stored on the Optuna trial."""
        final = self.final_metrics()
        return {k: final[k] for k in TRIAL_ATTRS if k in final}
