"""The report's section on the winner's selection-bias-corrected AUC (BBC-CV, `search.stats.estimates`), read
from `leaderboard.json`, so a reader sees which number is the honest one and whether chance was ruled out."""

from __future__ import annotations

import html
from typing import Any

from search.study import Leaderboard, StudyFormatError, StudyPaths, read_json, read_leaderboard


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _chance(ci: list[float] | None, about: dict[str, Any], held: dict[str, Any] | None) -> str:
    """The warning when neither the corrected interval nor the hold-out CI shows the winner beats chance."""
    doubts = []
    if ci and not about.get("beats_chance"):
        doubts.append(
            f"its corrected 95% interval ({_f(ci[0])} to {_f(ci[1])}) includes 0.5"
            if ci[1] >= 0.5
            else f"its corrected 95% interval ({_f(ci[0])} to {_f(ci[1])}) lies below 0.5"
        )
    if held and not held.get("ci_low", 0) > 0.5:
        doubts.append(
            f"its held-out 95% CI ({_f(held.get('ci_low'))} to {_f(held.get('ci_high'))}) includes 0.5"
        )
    if not doubts:
        return ""
    return (
        '<p class="big"><b>The search could not show that the winner beats chance</b>: '
        f"{html.escape(' and '.join(doubts))}. Do not use it as a working model.</p>"
    )


def estimates_section(paths: StudyPaths) -> str:
    """`<h2>` and body: best cv_auc (optimistic) beside the corrected estimate (the one to quote, unless the
    candidates' whole selection is)."""
    head = "<h2>How good is the winner? (corrected for selection)</h2>"
    try:
        board = read_leaderboard(paths)
    except StudyFormatError as exc:
        return f"{head}<p>{html.escape(str(exc))}</p>"
    about = (board.corrected if board else None) or {}
    if board is None or board.corrected_auc is None or not board.corrected_auc_ci:
        why = about.get("error") or "the study's leaderboard has none (written before this estimate existed?)"
        return f"{head}<p>No corrected estimate: {html.escape(str(why))}.</p>"
    low, high = board.corrected_auc_ci
    unit = about.get("unit", "patient")
    parts = [
        f'<p class="big">Corrected estimate <b>{_f(board.corrected_auc)}</b> (95% interval {_f(low)} to '
        f"{_f(high)}){_quote(board)}. The best cv_auc, {_f(about.get('best_cv_auc'))}, is optimistic: it is "
        f"the best of {about.get('configurations')} trials, selected on the same folds it is scored on.</p>",
        f"<p>Method: {html.escape(str(about.get('method', 'BBC-CV')))} on the out-of-fold predictions of every "
        f"complete and early-stopped trial, no extra training: {about.get('used')} of {about.get('n_resamples')} "
        f"bootstrap resamples of {html.escape(unit)}s (seed {about.get('seed')}; {about.get('skipped')} skipped "
        "for lacking a class in or out of bag). Each picks the configuration with the best AUC on the in-bag "
        "patients and scores it on the out-of-bag ones; the estimate is their mean, the interval their 2.5 and "
        "97.5 percentiles.</p>",
        _chance(board.corrected_auc_ci, about, (read_json(paths.winner) or {}).get("holdout")),
    ]
    excluded = about.get("excluded") or []
    if excluded:
        items = "".join(
            f"<li>trial {e.get('trial')}: {html.escape(str(e.get('why')))}</li>" for e in excluded
        )
        parts.append(f"<p>Trials left out of the estimate:</p><ul>{items}</ul>")
    return head + "".join(parts)


def _quote(board: Leaderboard) -> str:
    """Which estimate to quote: this one, or, when the study compared kinds, the candidates' whole selection."""
    if board.whole_selection:
        return (
            ": the best single trial's. Quote the whole selection's estimate under <i>Candidates of every kind</i>, "
            "the estimate of what is registered"
        )
    return ": <b>quote this</b>"
