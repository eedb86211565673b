"""The report's baseline section: the non-deep baseline scored on the study's folds, from `leaderboard.json`,
beside the winner, and whether the winner beats it (`search.stats.baseline_text`)."""

from __future__ import annotations

import html
import math
from typing import Any

from search.stats.baseline_text import verdict
from search.study import StudyFormatError, StudyPaths, read_leaderboard


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def baseline_section(paths: StudyPaths) -> str:
    """`<h2>` section of the report (an explanation when the study has no baseline yet)."""
    head = "<h2>Baseline on the same folds</h2>"
    try:
        board = read_leaderboard(paths)
    except StudyFormatError:
        board = None
    b = board.baseline if board is not None else None
    if not b:
        return (
            f"{head}<p>No baseline yet: it is scored once per study when a search session ends "
            "(<code>stagesearch run --study ... --resume</code> adds it).</p>"
        )
    m, ci = b.get("metrics") or {}, b.get("cv_auc_ci") or [None, None]
    features = b.get("features") or []
    kind = (
        "lesion size, shape, intensity and GLCM texture"
        if b.get("masks")
        else ("intensity and GLCM texture of the ROI (the cohort has no masks on every scan)")
    )
    cells = [
        html.escape(str(b.get("model", "logistic regression"))),
        f"{len(features)}",
        _f(b.get("cv_auc")),
        f"{_f(ci[0])} to {_f(ci[1])}",
        *(_f(m.get(k)) for k in ("accuracy", "precision", "recall", "f1")),
        f"<code>{html.escape(str(b.get('mlflow_run_id') or '-'))}</code>",
    ]
    th = "".join(
        f"<th>{h}</th>"
        for h in (
            "model",
            "features",
            "cv_auc",
            "95% CI",
            "accuracy",
            "precision",
            "recall",
            "F1",
            "MLflow run",
        )
    )
    table = f"<table><thead><tr>{th}</tr></thead><tbody><tr>{''.join(f'<td>{c}</td>' for c in cells)}</tr></tbody></table>"
    said = verdict(board) if board is not None else None
    outcome = f'<p class="big">{html.escape(said[1][0].upper() + said[1][1:])}.</p>' if said else ""
    return (
        f"{head}<p>A simple model scored on exactly the folds the trials were scored on, in the same unit "
        f"(pooled out-of-fold, patient-level AUC; the other metrics at probability 0.5): {html.escape(kind)}, "
        f"{b.get('patients', '?')} patients. It is not a trial and did not count against the budget.</p>"
        f"{table}{outcome}<p>Features: {html.escape(', '.join(features))}.</p>"
    )
