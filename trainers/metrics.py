"""Patient-level staging metrics, the one place each is computed: AUC, its bootstrap interval, Youden's
threshold (0.5 when undefined), confusion counts and their rates (NaN where undefined), fold spread.

numpy, scipy and scikit-learn only (no torch): the dashboards import it too (a contract says so)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def is_finite(value: Any) -> bool:
    """A real number (numpy's too; not a bool, not a string) that is neither NaN nor infinite: what may be logged
    as a metric or compared. The one such check of the project."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (a tiny validation fold)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(roc_auc_score(y_true, y_prob))


def youden_threshold(y_true: Any, y_prob: Any) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1, at most 1; 0.5 when there is no
    meaningful cut (one class, or J <= 0: no better than chance). The project's one rule: the registered
    threshold, the summary's `_youden` metrics and the report's operating point all come from it."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, y_prob)
    best = int(np.argmax(tpr - fpr))
    if tpr[best] - fpr[best] <= 0:
        return 0.5
    return float(min(thr[best], 1.0))


def confusion(y_true: Any, y_prob: Any, threshold: float) -> dict[str, int]:
    """Counts with P(T2) >= threshold called T2 (the positive class): tp, fp, fn, tn."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(y_prob, np.float64) >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def rates(counts: dict[str, int]) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV, accuracy and F1 of confusion counts. The one convention for a rate
    whose denominator is 0: NaN (undefined, not 0: "no patient called T2" is not "every call wrong"), shown as
    "-" and left out of MLflow and leaderboard.json."""
    tp, fp, fn, tn = (counts[k] for k in ("tp", "fp", "fn", "tn"))
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def threshold_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision (PPV), recall (sensitivity), specificity and F1 with P(T2) >= threshold as positive,
    from `rates` (NaN where undefined)."""
    r = rates(confusion(y_true, y_prob, threshold))
    return {
        "accuracy": r["accuracy"],
        "precision": r["ppv"],
        "recall": r["sensitivity"],
        "specificity": r["specificity"],
        "f1": r["f1"],
    }


def summary_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    """AUC plus threshold metrics at 0.5 and at the Youden threshold, flat keys for tracking."""
    out: dict[str, float] = {"auc": auc(y_true, y_prob)}
    thr = youden_threshold(y_true, y_prob)
    out["youden_threshold"] = thr
    for key, value in threshold_metrics(y_true, y_prob, 0.5).items():
        out[key] = value
    for key, value in threshold_metrics(y_true, y_prob, thr).items():
        out[f"{key}_youden"] = value
    return out


CI_RESAMPLES = 2000


def _resampled_aucs(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The AUC of each resample (a row of patient indices `idx`) from Mann-Whitney ranks, ties counting half;
    NaN for a resample with one class only."""
    from scipy.stats import rankdata

    yb, ranks = y[idx], rankdata(p[idx], axis=1)
    pos = yb.sum(axis=1)
    neg = idx.shape[1] - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            (pos > 0) & (neg > 0), ((ranks * yb).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg), np.nan
        )


def _resamples(n_patients: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_patients, (n, n_patients))


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_auc_ci(
    y_true: Any, y_prob: Any, n: int = CI_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC over patients, resamples with one class skipped (NaN, NaN when
    none has both). Vectorised: each resample's AUC from Mann-Whitney ranks (ties count half), so 2,000
    resamples take milliseconds. The one AUC interval of the project: summary, model card, report, predict and
    the benches all call it."""
    y = np.asarray(y_true).astype(bool)
    return _percentiles(
        _resampled_aucs(y, np.asarray(y_prob, np.float64), _resamples(len(y), n, seed)), level
    )


def bootstrap_auc_difference(
    y_true: Any, prob_a: Any, prob_b: Any, n: int = CI_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) of two models' predictions of the same patients, and the percentile bootstrap interval
    of that difference, paired: each resample draws patients once and scores both models on them."""
    y = np.asarray(y_true).astype(bool)
    a, b = np.asarray(prob_a, np.float64), np.asarray(prob_b, np.float64)
    idx = _resamples(len(y), n, seed)
    lo, hi = _percentiles(_resampled_aucs(y, a, idx) - _resampled_aucs(y, b, idx), level)
    return auc(y.astype(int), a) - auc(y.astype(int), b), lo, hi


def fold_spread(fold_auc: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the per-fold AUCs, skipping NaN folds (NaN when undefined)."""
    valid = [a for a in fold_auc if not math.isnan(a)]
    mean = float(np.mean(valid)) if valid else math.nan
    return mean, float(np.std(valid, ddof=1)) if len(valid) > 1 else math.nan


def patient_means(patient_ids: list[str], probs: list[float] | np.ndarray) -> tuple[list[str], np.ndarray]:
    """One probability per patient: the mean over the patient's scans (or slices), patients in first-seen order."""
    groups: dict[str, list[float]] = {}
    for pid, p in zip(patient_ids, probs, strict=True):
        groups.setdefault(pid, []).append(float(p))
    return list(groups), np.asarray([float(np.mean(v)) for v in groups.values()])
