"""The report's study-wide figures: optimisation history, parameter importances, fold-to-fold spread.

Each figure says what its numbers are: a pruned trial has no cv_auc (it never finished), so the history
shows it at the mean fold AUC of its last epoch (what early stopping compared) with its own marker; the
fold spread is drawn from the per-fold AUCs themselves (lowest to highest), which can never leave [0, 1]
the way a mean ± sd bar over 3 to 5 folds does.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import optuna
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.trial import FrozenTrial, TrialState
from sklearn.metrics import roc_auc_score

from search.study import backbone_of, family_attr
from search.tracking.figures import save
from search.tracking.run_notes import MIN_TRIALS_FOR_IMPORTANCE

COMPLETE_LABEL = "complete: cv_auc (pooled out-of-fold AUC)"
PRUNED_LABEL = "pruned: mean_fold_auc at its last epoch"
HISTORY_YLABEL = "AUC (complete: cv_auc; pruned: mean_fold_auc)"


def families(trials: list[FrozenTrial]) -> dict[str, str]:
    """Backbone -> family, as the search recorded it on the trials."""
    return {backbone_of(t): family_attr(t) for t in trials if family_attr(t) != "-"}


def pruned_value(trial: FrozenTrial) -> float | None:
    """A pruned trial's mean fold AUC at its last epoch: the `fold_auc_mean` the search stored from its last
    report, else its last intermediate value (Optuna's per-epoch mean_fold_auc); None when it never reported."""
    value = trial.user_attrs.get("fold_auc_mean")
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return float(value) if value is not None and math.isfinite(value) else None


def history_points(trials: list[FrozenTrial]) -> dict[str, list[tuple[int, float, str]]]:
    """(trial number, value, backbone) of the complete trials (cv_auc) and the pruned ones (pruned_value)."""
    points: dict[str, list[tuple[int, float, str]]] = {"complete": [], "pruned": []}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.value is not None:
            points["complete"].append((t.number, float(t.value), backbone_of(t)))
        elif t.state == TrialState.PRUNED and (value := pruned_value(t)) is not None:
            points["pruned"].append((t.number, value, backbone_of(t)))
    return points


def draw_history(trials: list[FrozenTrial], colors: dict[str, Any]) -> Figure:
    """The history figure: colour = backbone, marker = what the value is (legend), best-cv_auc-so-far line."""
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    points = history_points(trials)
    for kind, marker in (("complete", "o"), ("pruned", "x")):
        if points[kind]:
            numbers, values, backbones = zip(*points[kind], strict=True)
            edge = {"edgecolor": "black", "linewidth": 0.5} if marker == "o" else {}
            ax.scatter(
                numbers, values, s=46, marker=marker, c=[colors[b] for b in backbones], zorder=3, **edge
            )
    handles = [
        Line2D([], [], ls="", marker="o", color=colors[b], markeredgecolor="black", label=b)
        for b in sorted({b for kind in points.values() for _, _, b in kind})
    ]
    handles += [
        Line2D([], [], ls="", marker="o", color="white", markeredgecolor="black", label=COMPLETE_LABEL),
        Line2D([], [], ls="", marker="x", color="black", label=PRUNED_LABEL),
    ]
    if points["complete"]:
        numbers = [n for n, _, _ in points["complete"]] + [max(t.number for t in trials)]
        best = list(itertools.accumulate((v for _, v, _ in points["complete"]), max))
        (line,) = ax.step(numbers, best + best[-1:], where="post", color="black", lw=1.6)
        line.set_label("best cv_auc so far")
        handles.append(line)
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set(xlabel="trial number", ylabel=HISTORY_YLABEL, ylim=(-0.02, 1.02), title="Optimisation history")
    if not points["complete"] and not points["pruned"]:
        ax.text(0.5, 0.7, "no finished trial yet", ha="center", fontsize=13, transform=ax.transAxes)
    else:
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig


def figure_history(trials: list[FrozenTrial], path: Path, colors: dict[str, Any]) -> Path:
    """`draw_history` saved as PNG and SVG."""
    return save(draw_history(trials, colors), path)


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the parameters for cv_auc, or why the report shows none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n = len(complete)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"Parameter importances are not shown: they need at least {MIN_TRIALS_FOR_IMPORTANCE} "
            f"complete trials and this study has {n}. On fewer trials the importance model fits noise "
            "and can credit one parameter with everything."
        )
    if len({t.value for t in complete}) < 2:
        return None, (
            f"Parameter importances are not shown: all {n} complete trials have the same cv_auc, "
            "so there is no variation for a parameter to explain."
        )
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # degenerate studies (one value per parameter, ...)
        return None, f"Parameter importances could not be computed on {n} complete trials: {exc}"
    if not values or not all(math.isfinite(v) for v in values.values()):
        return None, f"Parameter importances are undefined on these {n} complete trials."
    return values, f"fANOVA importance of each parameter for cv_auc, over {n} complete trials."


def figure_importance(values: dict[str, float], path: Path) -> Path:
    """Horizontal bars, most important on top."""
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v + 0.01, i, f"{v:.2f}", va="center", fontsize=9)
    ax.set(
        xlim=(0, max(1.0, max(v for _, v in items) + 0.1)),
        xlabel="importance (sums to 1)",
        title="Parameter importances for cv_auc",
    )
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def fold_aucs(rows: list[dict[str, Any]] | None) -> list[float]:
    """Per-fold AUCs of an out-of-fold table (its last epoch), in fold order; a fold with one class has none."""
    if not rows:
        return []
    last = max(r["epoch"] for r in rows)
    aucs = []
    for fold in sorted({r["fold"] for r in rows}):
        mine = [r for r in rows if r["fold"] == fold and r["epoch"] == last]
        if len({r["label"] for r in mine}) == 2:
            aucs.append(float(roc_auc_score([r["label"] for r in mine], [r["prob"] for r in mine])))
    return aucs


def fold_summary(aucs: list[float]) -> str:
    """'mean (min to max, k folds)' of per-fold AUCs, or '-'."""
    if not aucs:
        return "-"
    return f"{sum(aucs) / len(aucs):.3f} ({min(aucs):.3f} to {max(aucs):.3f}, {len(aucs)} folds)"


def draw_folds(
    best: dict[str, FrozenTrial],
    per_fold: dict[str, list[float]],
    colors: dict[str, Any],
    family: dict[str, str],
) -> Figure:
    """Per backbone (best complete trial): each fold's AUC (dots), their range (bar, min to max), their mean
    (line), and the pooled cv_auc (diamond); a trial without per-fold AUCs shows its stored mean only."""
    names, seen = list(best), set()

    def label(text: str) -> str | None:  # each kind of mark once in the legend
        return None if text in seen or seen.add(text) else text

    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(names) + 2.5), 5))
    for i, name in enumerate(names):
        aucs, color, x = per_fold.get(name) or [], colors[name], i - 0.1
        mean = sum(aucs) / len(aucs) if aucs else best[name].user_attrs.get("fold_auc_mean")
        if aucs:
            ax.vlines(
                x, min(aucs), max(aucs), color=color, lw=2, label=label("range of the fold AUCs (min to max)")
            )
            offsets = [0.12 * (j - (len(aucs) - 1) / 2) / max(1, len(aucs) - 1) for j in range(len(aucs))]
            ax.scatter(
                [x + o for o in offsets],
                aucs,
                s=22,
                color=color,
                edgecolor="black",
                linewidth=0.4,
                zorder=3,
                label=label("one fold's AUC"),
            )
        if mean is not None:
            ax.hlines(mean, x - 0.12, x + 0.12, color="black", lw=2, label=label("mean fold AUC"))
            ax.annotate(
                f"{mean:.2f}",
                (x - 0.12, mean),
                xytext=(-4, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=8.5,
            )
        ax.scatter(
            i + 0.2, best[name].value, marker="D", s=46, color="black", zorder=3, label=label("pooled cv_auc")
        )
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set_xticks(range(len(names)), [f"{n}\n({family.get(n, '-')})" for n in names], fontsize=9)
    ax.set(
        xlim=(-0.7, len(names) - 0.4),
        ylim=(-0.02, 1.02),
        ylabel="AUC",
        title="Fold-to-fold spread of the best trial per backbone",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    return fig


def figure_folds(
    best: dict[str, FrozenTrial],
    per_fold: dict[str, list[float]],
    path: Path,
    colors: dict[str, Any],
    family: dict[str, str],
) -> Path:
    """`draw_folds` saved as PNG and SVG."""
    return save(draw_folds(best, per_fold, colors, family), path)
