"""Metrics agree with scikit-learn; folds never put one patient (or site) on both sides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve

from trainers.folds import FoldsMismatchError, load_or_make_folds, make_folds
from trainers.metrics import (
    auc,
    bootstrap_auc_ci,
    bootstrap_auc_difference,
    summary_metrics,
    threshold_metrics,
    youden_threshold,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    p = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    for thr in (0.5, 0.37):
        pred = (p >= thr).astype(int)
        m = threshold_metrics(y, p, thr)
        assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert m["precision"] == pytest.approx(precision_score(y, pred, zero_division=np.nan))
        assert m["recall"] == pytest.approx(recall_score(y, pred))
        assert m["f1"] == pytest.approx(f1_score(y, pred))
    fpr, tpr, thr = roc_curve(y, p)
    assert youden_threshold(y, p) == pytest.approx(min(thr[np.argmax(tpr - fpr)], 1.0))
    s = summary_metrics(y, p)
    assert s["recall_youden"] - (1 - s["specificity_youden"]) == pytest.approx(np.max(tpr - fpr))


def test_auc_single_class_is_nan() -> None:
    assert math.isnan(auc(np.ones(4), np.linspace(0, 1, 4)))


def _cohort(n: int = 40, seed: int = 0) -> tuple[dict[str, int], dict[str, str]]:
    rng = np.random.default_rng(seed)
    labels = {f"P{i:03d}": int(rng.random() < 0.45) for i in range(n)}
    sites = {p: f"site{i % 7}" for i, p in enumerate(labels)}
    return labels, sites


def test_paired_auc_difference_and_its_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    better, worse = y * 0.8 + rng.random(400), y * 0.2 + rng.random(400)
    diff, lo, hi = bootstrap_auc_difference(y, better, worse, n=500)
    assert diff == pytest.approx(auc(y, better) - auc(y, worse)) and 0 < lo < diff < hi
    assert bootstrap_auc_difference(y, worse, better, n=500) == pytest.approx((-diff, -hi, -lo))
    assert bootstrap_auc_difference(y, better, better, n=500) == (0.0, 0.0, 0.0)
    # paired: the difference's interval is narrower than the two models' own intervals side by side
    (a_lo, a_hi), (b_lo, b_hi) = bootstrap_auc_ci(y, better, n=500), bootstrap_auc_ci(y, worse, n=500)
    assert hi - lo < (a_hi - a_lo) + (b_hi - b_lo)


def test_folds_keep_patients_apart_and_stratify() -> None:
    labels, _ = _cohort()
    folds = make_folds(labels, None, k=5, seed=0)
    assert len(folds) == 5
    seen = []
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) == set(labels)
        assert {labels[p] for p in f["val"]} == {0, 1}
        seen += f["val"]
    assert sorted(seen) == sorted(labels)  # every patient validated exactly once


def test_folds_grouped_by_site_keep_sites_apart() -> None:
    labels, sites = _cohort()
    for f in make_folds(labels, sites, k=3, seed=1):
        assert not {sites[p] for p in f["train"]} & {sites[p] for p in f["val"]}


def test_folds_written_once_and_reused(tmp_path) -> None:
    labels, _ = _cohort()
    path = tmp_path / "folds.json"
    first = load_or_make_folds(path, labels, None, 5, 0, "abc")
    mtime = path.stat().st_mtime_ns
    assert load_or_make_folds(path, labels, None, 5, 0, "abc") == first
    assert path.stat().st_mtime_ns == mtime
    assert make_folds(labels, None, 5, 1) != first
    with pytest.raises(FoldsMismatchError):
        load_or_make_folds(path, labels, None, 5, 1, "abc")
