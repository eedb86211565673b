"""Patient-level staging metrics: AUC, Youden threshold, accuracy, precision, recall, F1."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (a tiny validation fold)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(roc_auc_score(y_true, y_prob))


def youden_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (0.5 when undefined)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, y_prob)
    best = int(np.argmax(tpr - fpr))
    return float(min(thr[best], 1.0))


def threshold_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity and F1 with P(T2) >= threshold as positive."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(y_prob) >= threshold).astype(int)
    tp = int(np.sum((y_pred == 1) & (y_true == 1)))
    tn = int(np.sum((y_pred == 0) & (y_true == 0)))
    fp = int(np.sum((y_pred == 1) & (y_true == 0)))
    fn = int(np.sum((y_pred == 0) & (y_true == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / max(len(y_true), 1),
        "precision": precision,
        "recall": recall,
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
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


def bootstrap_auc_ci(
    y_true: np.ndarray, y_prob: np.ndarray, n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC over patients (resamples with one class skipped)."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y_true), len(y_true))
        if len(np.unique(y_true[idx])) == 2:
            values.append(roc_auc_score(y_true[idx], y_prob[idx]))
    if not values:
        return math.nan, math.nan
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


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
