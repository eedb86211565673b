"""The report's section on sites: the winner per site (out-of-fold and held-out), the held-out sites, and
whether the site alone predicts the stage. Read from `leaderboard.json`, `winner.json` and `holdout.json`."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from search.study import StudyFormatError, StudyPaths, read_json, read_leaderboard

SHORTCUT_WARN_AUC = 0.6  # as the console summary (search.stats.sites), which the dashboards may not import


def _auc(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "- (one class)"


def _site_table(oof: Mapping[str, Any], held: Mapping[str, Any]) -> str:
    """One row per site: out-of-fold AUC, n, % T2, then the held-out ones (blank where a site has none)."""
    head = "".join(
        f"<th>{h}</th>" for h in ("site", "AUC (out-of-fold)", "n", "% T2", "AUC (held-out)", "n", "% T2")
    )
    rows = []
    for site in sorted(set(oof) | set(held)):
        cells = [html.escape(site)]
        for part in (oof, held):
            m = part.get(site)
            cells += [_auc(m.get("auc")), str(m["n"]), f"{100 * m['prevalence']:.0f}%"] if m else ["", "", ""]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _shortcut(short: Mapping[str, Any]) -> str:
    value = short.get("cv_auc")
    if value is None:
        return ""
    verdict = (
        "<b>the site is a shortcut</b>: a model can score by recognising the site (scanner, protocol) instead of "
        "the tumour; search with <code>--cv-group site</code> to keep sites apart"
        if value >= SHORTCUT_WARN_AUC
        else "no sign that the site alone gives the stage away"
    )
    prevalence = ", ".join(
        f"{html.escape(s)} {100 * p:.0f}% T2" for s, p in (short.get("prevalence") or {}).items()
    )
    return (
        f"<p>The site alone predicts the stage with CV AUC <b>{value:.3f}</b> (a logistic regression on the "
        f"site only, on the study's own {short.get('folds')} folds, {short.get('n_patients')} search patients; "
        f"{prevalence}): {verdict}.</p>"
    )


def sites_section(paths: StudyPaths) -> str:
    """`<h2>Sites</h2>` and its content, or "" when the cohort names no sites (or no search has ended)."""
    try:
        board = read_leaderboard(paths)
    except StudyFormatError:
        return ""
    if board is None or not (board.per_site or board.site_shortcut):
        return ""
    per_site = board.per_site or {}
    held = per_site.get("holdout")
    winner = read_json(paths.winner)
    if (
        not held and board.rows and winner.get("trial") == board.rows[0].trial
    ):  # registered after the leaderboard
        held = (winner.get("holdout") or {}).get("per_site")
    parts = ["<h2>Sites</h2>"]
    held_sites = read_json(paths.holdout).get("sites")
    if held_sites:
        parts.append(
            f"<p>Held out whole sites: {html.escape(', '.join(held_sites))} (no trial saw a patient of "
            "them; the folds keep the other sites apart too).</p>"
        )
    if per_site.get("oof") or held:
        trial = board.rows[0].trial if board.rows else "?"
        parts.append(
            f"<p>The winner (trial {trial}) per site: AUC, number of patients and share of T2. A site "
            "with one class has no AUC; a small site's AUC is very uncertain.</p>"
        )
        parts.append(_site_table(per_site.get("oof") or {}, held or {}))
    parts.append(_shortcut(board.site_shortcut or {}))
    return "".join(parts)
