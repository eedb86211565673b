"""One implementation of each statistic (`trainers.metrics`): the same predictions through the search's summary
metrics, the registered version's threshold, the report's table, `stagesearch predict`'s score and
`bench.generalise` give the same AUC, interval, threshold and rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.generalise import score as generalise_score
from dashboards.report_winner import metric_rows, operating_points
from search.registry.version_tags import operating_threshold
from search.stats.predict_scores import label_score
from trainers.metrics import bootstrap_auc_ci, confusion, rates, summary_metrics, youden_threshold


def _predictions(seed: int, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1), 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_consumer_reports_the_same_numbers(seed: int) -> None:
    y, p = _predictions(seed)
    ids = [f"P{i:03d}" for i in range(len(y))]
    cut = youden_threshold(y, p)
    r = rates(confusion(y, p, cut))
    ci = bootstrap_auc_ci(y, p, seed=0)

    summary = summary_metrics(y, p)  # what a trial reports and the leaderboard keeps
    assert summary["youden_threshold"] == cut
    assert summary["recall_youden"] == pytest.approx(r["sensitivity"])
    assert summary["specificity_youden"] == pytest.approx(r["specificity"])
    assert summary["precision_youden"] == pytest.approx(r["ppv"])

    oof = [{"patient_id": i, "label": int(a), "prob": float(b)} for i, a, b in zip(ids, y, p, strict=True)]
    assert operating_threshold(oof)[0] == cut  # the registered version's threshold

    assert operating_points(y, p)[1][1] == cut  # the report's Youden operating point
    row = metric_rows([("oof", "youden", y, p, cut)])[0]
    assert row[4:8] == [str(v) for v in confusion(y, p, cut).values()]
    assert row[8] == f"{r['sensitivity']:.3f}" and row[9] == f"{r['specificity']:.3f}"

    scored = label_score(ids, list(p), dict(zip(ids, map(int, y), strict=True)), cut)  # stagesearch predict
    assert scored is not None and scored.auc == pytest.approx(summary["auc"]) and scored.ci == ci
    assert (scored.tp, scored.fp, scored.fn, scored.tn) == tuple(confusion(y, p, cut).values())

    bench = generalise_score(list(map(int, y)), list(p), cut)  # bench.generalise
    assert bench["auc"] == pytest.approx(summary["auc"]) and (bench["auc_ci_low"], bench["auc_ci_high"]) == ci
    assert bench["sensitivity"] == r["sensitivity"] and bench["specificity"] == r["specificity"]


def test_undefined_rates_are_nan_everywhere_and_a_chance_cut_falls_back_to_one_half() -> None:
    y = np.array([0, 0, 1, 1])
    nobody_t2 = np.array([0.1, 0.2, 0.3, 0.4])
    r = rates(confusion(y, nobody_t2, 0.9))  # no patient called T2: PPV undefined, not 0
    assert math.isnan(r["ppv"]) and r["sensitivity"] == 0.0
    assert math.isnan(summary_metrics(y, nobody_t2 * 0 + 0.1)["precision"])
    assert youden_threshold(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])) == 0.5  # one class
    assert youden_threshold(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.5  # worse than chance: J <= 0
