"""ROC curves drawn once for everyone: per trial in MLflow, and in the study report.

matplotlib and scikit-learn only (no Ray, no torch), so the dashboards may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def roc_points(rows: Sequence[dict[str, Any]]) -> tuple[Any, Any, float] | None:
    """(fpr, tpr, auc) of prediction rows with `label` and `prob`; None with a single class."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = [int(r["label"]) for r in rows]
    p = [float(r["prob"]) for r in rows]
    if len(set(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr, float(roc_auc_score(y, p))


def palette(names: list[str]) -> dict[str, Any]:
    """One colour per name (a study's backbones keep theirs across all figures)."""
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(sorted(names))}


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write a figure as PNG (for the page) and as SVG beside it (vector, for a paper), close it, return the PNG."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path


def figure_roc(
    curves: dict[str, tuple[Any, Any, float]],
    labels: dict[str, str],
    title: str,
    path: Path,
    colors: dict[str, Any] | None = None,
    size: float = 6.0,
) -> Path:
    """ROC curves (one per key), AUC in the legend, chance diagonal."""
    fig, ax = plt.subplots(figsize=(size, size * 0.93))
    colors = colors or palette(list(curves))
    for key, (fpr, tpr, auc) in sorted(curves.items(), key=lambda kv: -kv[1][2]):
        ax.step(fpr, tpr, where="post", lw=2.2, color=colors[key], label=f"{labels[key]}  AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.02),
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title=title,
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    return save(fig, path)
