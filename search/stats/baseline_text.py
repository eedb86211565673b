"""How the non-deep baseline reads beside the winner: its console row, whether the winner beats it, and its
fields on the parent MLflow run. Reads `Leaderboard.baseline` only (no trainers, so the report imports it).

The winner is judged by its selection-bias-corrected AUC and interval when the leaderboard has them: the best
trial's cv_auc was picked as the maximum over many trials on the same folds, so comparing it with the
baseline (one model, nothing selected) favours the search. Without a corrected estimate the best cv_auc is
used and said to be optimistic.
"""

from __future__ import annotations

import math
from typing import Any

from search.study import Leaderboard


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def baseline_row(board: Leaderboard) -> str:
    """The baseline as one more line of `format_leaderboard`'s table (with a leading newline; "" without)."""
    b = board.baseline
    if not b:
        return ""
    m = b.get("metrics") or {}
    what = f"{len(b.get('features') or [])} {'lesion' if b.get('masks') else 'ROI (no masks)'} features"
    return (
        f"\n{'baseline':<11} {'logistic regression':<22} {'-':>5} {_f(b.get('cv_auc')):>6} "
        f"{_f(m.get('accuracy')):>6} {_f(m.get('precision')):>6} {_f(m.get('recall')):>6} "
        f"{_f(m.get('f1')):>6}  {what}, same folds; not a trial"
    )


def baseline_ci(board: Leaderboard) -> str:
    """`0.612 (95% CI 0.510-0.714)` for the baseline ("" without one)."""
    b = board.baseline
    if not b:
        return ""
    ci = b.get("cv_auc_ci") or [None, None]
    return f"{_f(b.get('cv_auc'))} (95% CI {_f(ci[0])}-{_f(ci[1])})"


def verdict(board: Leaderboard) -> tuple[str, str] | None:
    """(outcome, sentence): does the winner beat the baseline? outcome is "beats", "not shown" or "does not";
    None without a baseline or a winner. "beats" needs the winner's corrected interval (`_quoted`) to lie above
    the baseline's cv_auc; without a corrected estimate, the best cv_auc above the baseline's whole interval."""
    b = board.baseline
    if not b or not board.rows or b.get("cv_auc") is None:
        return None
    base, ci = float(b["cv_auc"]), b.get("cv_auc_ci") or [math.nan, math.nan]
    quoted = _quoted(board)
    if quoted:
        est, (lo, hi), what = quoted
        mine = f"{what} {est:.3f} (95% CI {lo:.3f}-{hi:.3f})"
        if lo > base:
            return (
                "beats",
                f"the winner beats the baseline: its {mine} lies above the baseline's cv_auc {base:.3f}",
            )
        if est > base:
            return "not shown", (
                f"the winner is not shown to beat the baseline: its {mine} includes the "
                f"baseline's cv_auc {base:.3f}"
            )
        return "does not", (
            f"the winner does not beat the baseline: its {mine} is not above the baseline's "
            f"cv_auc {base:.3f}; a logistic regression on hand-made features does as well"
        )
    best = board.rows[0].cv_auc
    caveat = (
        "(no corrected estimate: the best cv_auc is optimistic, the maximum over trials selected on the "
        "same folds)"
    )
    if ci[1] is not None and math.isfinite(float(ci[1])) and best > float(ci[1]):
        return "beats", (
            f"the winner's best cv_auc {best:.3f} is above the baseline's interval "
            f"{baseline_ci(board)} {caveat}"
        )
    if best > base:
        return "not shown", (
            f"the winner is not shown to beat the baseline: its best cv_auc {best:.3f} lies "
            f"within the baseline's {baseline_ci(board)} {caveat}"
        )
    return "does not", (
        f"the winner does not beat the baseline: even its best cv_auc {best:.3f} is not above "
        f"the baseline's {baseline_ci(board)}"
    )


def _quoted(board: Leaderboard) -> tuple[float, list[float], str] | None:
    """(estimate, interval, its name) the winner is judged by: the candidates' whole selection (the estimate of
    what is registered, whichever kind) when the study compared kinds, else the single trial's corrected AUC."""
    whole = board.whole_selection
    if whole:
        return float(whole["corrected_auc"]), whole["corrected_auc_ci"], "corrected AUC (whole selection)"
    if board.corrected_auc is not None and board.corrected_auc_ci:
        return float(board.corrected_auc), board.corrected_auc_ci, "corrected AUC"
    return None


def print_baseline(board: Leaderboard) -> None:
    """The console's baseline lines: its estimate and whether the winner beats it."""
    if not board.baseline:
        return
    b = board.baseline
    print(
        f"\nbaseline (not a trial): {b.get('model', 'logistic regression')} on the study's folds: cv_auc "
        f"{baseline_ci(board)}, {len(b.get('features') or [])} features"
        f"{'' if b.get('masks') else ' (no masks: intensity and texture of the ROI only)'}"
    )
    said = verdict(board)
    if said:
        print(said[1])


def parent_fields(board: Leaderboard) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of the baseline for the study's parent MLflow run."""
    b = board.baseline
    if not b:
        return {}, {}
    ci = b.get("cv_auc_ci") or [None, None]
    metrics = {
        "baseline_cv_auc": b.get("cv_auc"),
        "baseline_cv_auc_ci_low": ci[0],
        "baseline_cv_auc_ci_high": ci[1],
    }
    tags = {"baseline_run_id": str(b.get("mlflow_run_id") or "")}
    said = verdict(board)
    if said:
        tags["winner_vs_baseline"] = said[0]
    return {k: float(v) for k, v in metrics.items() if v is not None}, tags
