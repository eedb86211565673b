"""The report's section on the winner alone, from its pooled out-of-fold table: cv_auc with a bootstrap CI over
patients, the metrics a paper tabulates at probability 0.5 and at Youden's threshold, the confusion matrices and
the calibration (reliability curve and Brier score).

The winner is the registered one (`winner.json`) when that trial is in the study, else the best complete trial.
Its out-of-fold predictions were made by fold models on patients they had not trained on, so these figures
describe the selected configuration honestly except for the selection itself (see the corrected estimate).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dashboards.report_tables import export_table
from search.study import StudyPaths, backbone_of, read_json, read_oof
from search.tracking.figures import save
from trainers.metrics import bootstrap_auc_ci, confusion, rates, youden_threshold

RATES = (
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("accuracy", "accuracy"),
    ("f1", "F1"),
)
CI_SEED = 0


def pick_winner(study: optuna.Study, paths: StudyPaths) -> tuple[FrozenTrial | None, str]:
    """(trial, why this one): the registered winner when it is a complete trial of the study, else the best."""
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None
    ]
    if not complete:
        return None, "no complete trial yet"
    registered = read_json(paths.winner).get("trial")
    for t in complete:
        if t.number == registered:
            return t, "the registered winner (winner.json)"
    return max(complete, key=lambda t: t.value), "the best complete trial (no registered winner from it yet)"


def _f(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def operating_points(y: np.ndarray, p: np.ndarray) -> list[tuple[str, float]]:
    """(rule, threshold): the fixed 0.5 and Youden's J on these predictions (0.5 again when J is not positive)."""
    cut = youden_threshold(y, p)
    j = rates(confusion(y, p, cut))
    note = f"Youden (J {j['sensitivity'] + j['specificity'] - 1:.3f})"
    return [("0.5", 0.5), (note, cut)]


def metric_rows(points: list[tuple[str, str, np.ndarray, np.ndarray, float]]) -> list[list[str]]:
    """Rows of the metrics table: predictions, rule, threshold, n, confusion counts, then the rates."""
    rows = []
    for source, rule, y, p, cut in points:
        counts = confusion(y, p, cut)
        r = rates(counts)
        rows.append(
            [
                source,
                rule,
                _f(cut, 4),
                str(len(y)),
                *(str(counts[k]) for k in ("tp", "fp", "fn", "tn")),
                *(_f(r[k]) for k, _ in RATES),
            ]
        )
    return rows


def figure_confusion(panels: list[tuple[str, dict[str, int]]], path: Path) -> Path:
    """One 2 x 2 matrix per threshold: rows the true stage, columns the call, counts and row shares."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 3.6), squeeze=False)
    for ax, (title, c) in zip(axes[0], panels, strict=True):
        grid = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(int(grid.max()), 1))
        for (i, k), n in np.ndenumerate(grid):
            share = n / grid[i].sum() if grid[i].sum() else 0.0
            ax.text(
                k,
                i,
                f"{n}\n({share:.0%})",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if n > grid.max() / 2 else "black",
            )
        ax.set_xticks([0, 1], ["T1", "T2"])
        ax.set_yticks([0, 1], ["T1", "T2"])
        ax.set(xlabel="called", ylabel="true stage", title=title)
    return save(fig, path)


def calibration_bins(y: np.ndarray, p: np.ndarray) -> list[tuple[float, float, int]]:
    """(mean predicted P(T2), observed share of T2, patients) per bin: equal-count bins of about 10 patients
    (at most 10 bins, at least 2), so each point rests on the same number of patients."""
    n_bins = max(2, min(10, len(y) // 10))
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    which = (
        np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2) if len(edges) > 1 else 0 * y
    )
    return [
        (float(p[which == b].mean()), float(y[which == b].mean()), int((which == b).sum()))
        for b in np.unique(which)
    ]


def figure_calibration(
    y: np.ndarray, p: np.ndarray, bins: list[tuple[float, float, int]], brier: float, path: Path
) -> Path:
    """Reliability curve (observed share of T2 against mean predicted P(T2) per bin) over the predictions."""
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.6, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot(
        [b[0] for b in bins],
        [b[1] for b in bins],
        "o-",
        color="tab:blue",
        lw=2,
        ms=7,
        label=f"winner (out-of-fold), Brier {brier:.3f}",
    )
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.02, 1.02), ylabel="observed share of T2", title="Calibration")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    hist.hist(
        [p[y == 0], p[y == 1]],
        bins=np.linspace(0, 1, 21),
        color=["tab:green", "tab:red"],
        label=["T1", "T2"],
        stacked=True,
    )
    hist.set(xlabel="predicted P(T2)", ylabel="patients")
    hist.legend(fontsize=8)
    return save(fig, path)


def figure_html(path: Path, caption: str) -> str:
    """The PNG inline (the page stands alone) with links to it and its SVG."""
    data = base64.b64encode(path.read_bytes()).decode()
    svg = path.with_suffix(".svg").name
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption>'
        f'{caption} (<a href="{path.name}">PNG</a>, <a href="{svg}">SVG</a>)</figcaption></figure>'
    )


def _holdout_point(
    trial: FrozenTrial, paths: StudyPaths
) -> tuple[str, str, np.ndarray, np.ndarray, float] | None:
    """The registered model's held-out predictions at its own threshold, when this trial is the registered one."""
    winner = read_json(paths.winner)
    held = (winner.get("holdout") or {}).get("predictions") or []
    if winner.get("trial") != trial.number or not held:
        return None
    cut = float(winner.get("threshold", 0.5))
    y = np.array([int(r["label"]) for r in held])
    p = np.array([float(r["prob"]) for r in held])
    return "held-out (registered model)", f"registered: {winner.get('threshold_rule', '0.5')}", y, p, cut


def winner_section(study: optuna.Study, paths: StudyPaths, out: Path) -> str:
    """`<h2>` and body: the winner's cv_auc with its CI, threshold metrics, confusion matrices, calibration."""
    head = "<h2>The winner in detail</h2>"
    trial, why = pick_winner(study, paths)
    if trial is None:
        return f"{head}<p>No winner yet: {why}.</p>"
    rows = read_oof(paths.oof(trial.number))
    if not rows or len({r["label"] for r in rows}) < 2:
        what = "has no out-of-fold table in the study folder" if not rows else "has a single class"
        return (
            f"{head}<p>Trial {trial.number} ({html.escape(why)}) {what}, so there is nothing to detail.</p>"
        )
    y = np.array([r["label"] for r in rows])
    p = np.array([r["prob"] for r in rows])
    low, high = bootstrap_auc_ci(y, p, seed=CI_SEED)
    parts = [
        f'<p class="big">Trial {trial.number}, {html.escape(backbone_of(trial))}, {html.escape(why)}: '
        f"cv_auc <b>{_f(trial.value)}</b> (95% CI {_f(low)} to {_f(high)}, percentile bootstrap over its "
        f"{len(y)} patients, 2,000 resamples, seed {CI_SEED}).</p>",
        "<p>The CI says how much the AUC of this configuration moves with the patients; it does not pay for "
        "having picked the best of many trials (the corrected estimate above does).</p>",
    ]
    oof = [("out-of-fold", rule, y, p, cut) for rule, cut in operating_points(y, p)]
    held = _holdout_point(trial, paths)
    parts.append(
        "<p>Metrics with P(T2) &ge; threshold called T2. Youden's threshold is chosen on these same "
        "predictions, so its out-of-fold figures are optimistic; a held-out row, where there is one, is "
        "scored at the registered model's threshold on patients no trial saw.</p>"
    )
    head_row = [
        "predictions",
        "threshold rule",
        "threshold",
        "patients",
        "TP",
        "FP",
        "FN",
        "TN",
        *(name for _, name in RATES),
    ]
    parts.append(export_table(out, "winner_metrics", head_row, metric_rows(oof + ([held] if held else []))))
    parts.append(_confusion_part(oof + ([held] if held else []), out))
    parts.append(_calibration_part(y, p, out))
    return head + "".join(parts)


def _confusion_part(points: list[tuple[str, str, np.ndarray, np.ndarray, float]], out: Path) -> str:
    panels, rows = [], []
    for source, _, y, p, cut in points:
        c = confusion(y, p, cut)
        panels.append((f"{source}\nat {cut:.4f}", c))
        rows += [
            [source, _f(cut, 4), "T1", str(c["tn"]), str(c["fp"]), str(c["tn"] + c["fp"])],
            [source, _f(cut, 4), "T2", str(c["fn"]), str(c["tp"]), str(c["fn"] + c["tp"])],
        ]
    path = figure_confusion(panels, out / "winner_confusion.png")
    table = export_table(
        out,
        "winner_confusion",
        ["predictions", "threshold", "true stage", "called T1", "called T2", "patients"],
        rows,
    )
    return figure_html(path, "Confusion matrices of the winner: counts and share of each true stage.") + table


def _calibration_part(y: np.ndarray, p: np.ndarray, out: Path) -> str:
    bins = calibration_bins(y, p)
    brier = float(np.mean((p - y) ** 2))
    prevalence = float(y.mean())
    path = figure_calibration(y, p, bins, brier, out / "winner_calibration.png")
    rows = [[_f(m), _f(o), str(n)] for m, o, n in bins]
    table = export_table(
        out, "winner_calibration", ["mean predicted P(T2)", "observed share of T2", "patients"], rows
    )
    return (
        figure_html(
            path,
            "Reliability curve of the winner's out-of-fold P(T2) in equal-count bins, and the "
            "predictions by true stage below.",
        )
        + f"<p>Brier score {_f(brier)} (mean squared error of P(T2); a constant guess of the prevalence "
        f"{prevalence:.2f} scores {_f(prevalence * (1 - prevalence))}). The fold models are trained with a "
        "class-balanced loss for few epochs, so their probabilities need not be calibrated; the ranking (AUC) "
        "and the threshold are what the registered model uses.</p>" + table
    )
