"""What `bench.simulate` prints and draws of its replays: per policy and budget the independent AUC of the pick
(median, quartiles, bootstrap CI of the median), its regret, P(beats the seven study configurations) on paired
seeds and the compute spent; and the curves as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.table_rows import Table


def median_ci(values: np.ndarray) -> tuple[float | None, float | None]:
    """A 95% percentile-bootstrap interval of the median over seeds (`scipy.stats.bootstrap`)."""
    from scipy.stats import bootstrap

    values = values[np.isfinite(values)]
    if len(values) < 2 or np.all(values == values[0]):
        return (float(values[0]), float(values[0])) if len(values) else (None, None)
    ci = bootstrap(
        (values,), np.median, n_resamples=2000, method="percentile", random_state=0, vectorized=True
    ).confidence_interval
    return float(ci.low), float(ci.high)


def _paired(values: np.ndarray, seven: np.ndarray) -> float | None:
    """The share of seeds on which a policy's pick beats the seven study configurations' (paired seeds)."""
    if len(seven) != len(values):
        return None
    ok = ~np.isnan(seven)
    return float(np.mean(values[ok] > seven[ok]))


def summarise(
    t: Table, results: dict[str, Any], seeds: Sequence[int], budgets: Sequence[float]
) -> list[dict]:
    """Per policy and budget: median, quartiles and bootstrap CI of the registered model's independent AUC, its
    regret to the table's best row, P(beats the seven study configurations) on paired seeds, and what it spent."""
    best = max(r.indep_auc.get(t.max_epochs, -1) for seeds_ in t.rows.values() for r in seeds_.values())
    rows = []
    auc = results["independent_auc"]
    for name, by_budget in auc.items():
        for b in budgets:
            values = np.array([np.nan if v is None else v for v in by_budget[str(b)]], dtype=float)
            seven = np.array(
                [np.nan if v is None else v for v in auc.get("seven", {}).get(str(b), [])], dtype=float
            )
            some = bool(np.isfinite(values).any())
            median = float(np.nanmedian(values)) if some else None
            low, high = median_ci(values)
            rows.append(
                {
                    "policy": name,
                    "budget": b,
                    "median indep": median,
                    "ci low": low,
                    "ci high": high,
                    "q1": float(np.nanpercentile(values, 25)) if some else None,
                    "q3": float(np.nanpercentile(values, 75)) if some else None,
                    "regret": None if median is None else float(best - median),
                    "P(> seven)": _paired(values, seven),
                    "none": int(np.isnan(values).sum()),
                    "fold-epochs": float(np.median(results["fold_epochs"][name][str(b)])),
                    "sim minutes": float(np.median(results["minutes"][name][str(b)])),
                }
            )
    return rows


def plot(rows: list[dict], unit: str, correlations: dict[str, list[float | None]] | None, path: Path) -> None:
    """Median independent AUC of the pick against the budget, one line per policy with its bootstrap CI; and,
    if given, each family's rank correlation of epoch-k with the last epoch (what a grace period should be)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if correlations else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.4), squeeze=False)
    ax = axes[0][0]
    colours = plt.get_cmap("tab20").colors
    for i, name in enumerate(dict.fromkeys(r["policy"] for r in rows)):
        mine = [r for r in rows if r["policy"] == name and r["median indep"] is not None]
        x = [r["budget"] for r in mine]
        style: dict[str, Any] = {"lw": 1.1, "alpha": 0.85, "color": colours[i % len(colours)]}
        if name in ("default", "seven"):  # the two the verdict compares: solid and dashed black
            style = {"lw": 2.4, "color": "black", "ls": "-" if name == "default" else "--"}
        ax.plot(x, [r["median indep"] for r in mine], marker="o", ms=3, label=name, **style)
        if name == "default":
            ax.fill_between(
                x, [r["ci low"] for r in mine], [r["ci high"] for r in mine], color="grey", alpha=0.25
            )
    ax.set_xlabel(f"budget ({unit})")
    ax.set_ylabel("independent AUC of the pick (median over seeds)")
    ax.set_title("Search policies on the learning-curve table")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    if correlations:
        ax = axes[0][1]
        for backbone, values in correlations.items():
            ax.plot(
                range(1, len(values) + 1),
                [np.nan if v is None else v for v in values],
                marker=".",
                label=backbone,
            )
        ax.set_xlabel("epoch k")
        ax.set_ylabel("Spearman: epoch-k fold AUC vs last-epoch independent AUC")
        ax.set_title("How early a rung can tell good from bad")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
