"""The report's candidates section: every kind of candidate scored on the study's folds (single trials, the deep
ensemble, radiomics), each kind's selection-corrected estimate, the whole selection's, which kind is registered
and why, and deep learning against radiomics in words (`search.stats.study_candidates`, from `leaderboard.json`)."""

from __future__ import annotations

import html

from dashboards.report_html import table
from search.stats.candidates_text import KINDS, NAMES, TIE, describe
from search.study import StudyFormatError, StudyPaths, read_json, read_leaderboard


def candidates_section(paths: StudyPaths) -> str:
    """`<h2>` section of the report (an explanation when the study has no candidates yet)."""
    head = "<h2>Candidates of every kind</h2>"
    try:
        board = read_leaderboard(paths)
    except StudyFormatError:
        board = None
    c = board.candidates if board is not None else None
    if not c or not c.get("kinds"):
        why = (c or {}).get("error") or "they are compared once per search session, when it ends"
        return f"{head}<p>No comparison of candidates yet: {html.escape(why)}.</p>"
    rows = []
    for kind in KINDS:
        entry = c["kinds"].get(kind)
        if entry:
            low, high = entry["corrected_auc_ci"]
            rows.append(
                [
                    NAMES[kind],
                    html.escape(describe(kind, entry)),
                    f"{entry['apparent_auc']:.3f}",
                    f"{entry['corrected_auc']:.3f}",
                    f"{low:.3f} to {high:.3f}",
                ]
            )
    whole = c["selection"]
    winner = read_json(paths.winner)
    registered = (
        f" The registered version is the {NAMES.get(winner['kind'], winner['kind'])}."
        if winner.get("kind")
        else ""
    )
    words = f"<p>{html.escape(c['difference']['words'])}.</p>" if c.get("difference") else ""
    return (
        f"{head}<p>Every candidate has an out-of-fold table on the study's folds. The apparent AUC is the "
        "chosen candidate's on all patients (optimistic: chosen on them). The corrected estimate repeats the "
        f"choice on {c['used']} bootstrap resamples of {c['unit']}s: the best candidate of each kind chosen, and "
        "the deep ensemble built, on the in-bag patients, scored on the out-of-bag ones.</p>"
        + table(["kind", "candidate", "apparent AUC", "corrected AUC", "95% interval"], rows)
        + f"<p>Whole selection (the kind chosen inside each resample too): <b>{whole['corrected_auc']:.3f}</b> "
        f"(95% interval {whole['corrected_auc_ci'][0]:.3f} to {whole['corrected_auc_ci'][1]:.3f}): <b>quote this</b>, "
        "the estimate of what is registered. Best kind "
        f"by corrected estimate: {NAMES[c['registered']]} (a simpler kind wins within {TIE}).{registered}</p>"
        + words
    )
