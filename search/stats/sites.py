"""Sites in a search's outcome: the winner per site, and whether the site alone predicts the stage.

A model that does well pooled over sites may do well at one site only, and a cohort whose sites differ in
prevalence lets a model score by recognising the site (scanner, protocol) instead of the tumour. So the
summary shows the winner's AUC, n and prevalence per site (out-of-fold, and on the held-out patients), and,
when the folds do not keep sites apart (no `--cv-group site`), how well a logistic regression on the site
alone predicts the label on the study's own folds (`site_shortcut`). Everything here reads the study folder
and the cohort's manifest; patient ids are the study's (pseudonyms in a pseudonymised study).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from search.study import Leaderboard, StudyConfig, StudyFormatError, StudyPaths, read_json, read_oof

#: The site-only model's CV AUC from which the summary warns that site is a shortcut.
SHORTCUT_WARN_AUC = 0.6


@dataclass(frozen=True)
class CohortSites:
    """Patient id (the study's: a pseudonym when pseudonymised) -> site and -> label."""

    sites: dict[str, str]
    labels: dict[str, int]


def cohort_sites(config: StudyConfig, paths: StudyPaths) -> CohortSites | None:
    """The sites and labels of the study's patients from its manifest (None when it names no sites or cannot
    be read now). Images are not read again: the search already validated them."""
    from search.study.pseudonyms import study_pseudonyms
    from trainers.manifest import ManifestError, load_manifest

    settings = config.settings
    try:
        cohort = load_manifest(
            config.manifest_path,
            folds=int(settings.folds),
            cv_group=str(settings.cv_group),
            check_images=False,
        )
        rename = study_pseudonyms(config, paths, cohort.patients)
    except (ManifestError, StudyFormatError, OSError, ValueError):  # e.g. a moved manifest or a lost salt
        return None
    if rename is not None:
        cohort = cohort.renamed(rename)
    sites = {s.patient_id: s.site for s in cohort.scans if s.site}
    return CohortSites(sites, cohort.patient_labels()) if sites else None


def site_metrics(
    patients: Sequence[str], labels: Sequence[int], probs: Sequence[float], sites: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """{site: {auc, n, prevalence}} of per-patient predictions; auc None where a site has one class only
    (patients without a site are left out)."""
    from trainers.metrics import auc

    by_site: dict[str, list[tuple[int, float]]] = {}
    for p, y, prob in zip(patients, labels, probs, strict=True):
        if p in sites:
            by_site.setdefault(sites[p], []).append((int(y), float(prob)))
    out = {}
    for site, rows in sorted(by_site.items()):
        y = [r[0] for r in rows]
        value = auc(y, [r[1] for r in rows])
        out[site] = {
            "auc": None if math.isnan(value) else round(value, 4),
            "n": len(rows),
            "prevalence": round(sum(y) / len(y), 4),
        }
    return out


def winner_per_site(board: Leaderboard, paths: StudyPaths, known: CohortSites) -> dict[str, Any] | None:
    """`per_site` of the leaderboard's winner from its out-of-fold table (hold-out: filled after registration)."""
    if not board.rows or board.rows[0].oof is None:
        return None
    rows = read_oof(paths.root / board.rows[0].oof)
    if not rows:
        return None
    oof = site_metrics(
        [r["patient_id"] for r in rows], [r["label"] for r in rows], [r["prob"] for r in rows], known.sites
    )
    return {"oof": oof, "holdout": None}


def site_shortcut(paths: StudyPaths, known: CohortSites) -> dict[str, Any] | None:
    """How well the site alone predicts the label on the search patients: a logistic regression on the one-hot
    site, trained and scored on the study's own folds (`folds.json`), pooled out-of-fold AUC like cv_auc.
    None when the search patients come from fewer than 2 sites or the folds are not written."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    from trainers.metrics import auc

    folds = read_json(paths.folds).get("folds") or []
    patients = sorted({p for f in folds for p in f["val"]})
    if not patients or len({known.sites.get(p) for p in patients} - {None}) < 2:
        return None
    site = np.array([[known.sites.get(p, "")] for p in patients])
    y = np.array([known.labels[p] for p in patients])
    index = {p: i for i, p in enumerate(patients)}
    prob = np.full(len(patients), np.nan)
    for fold in folds:
        tr, va = [index[p] for p in fold["train"]], [index[p] for p in fold["val"]]
        if len(set(y[tr])) < 2:  # one class to learn from: the training prevalence for everyone
            prob[va] = float(y[tr].mean())
            continue
        enc = OneHotEncoder(handle_unknown="ignore").fit(site[tr])
        model = LogisticRegression(max_iter=1000).fit(enc.transform(site[tr]), y[tr])
        prob[va] = model.predict_proba(enc.transform(site[va]))[:, 1]
    value = auc(y, prob)
    prevalence = {str(s): round(float(y[site[:, 0] == s].mean()), 4) for s in sorted(set(site[:, 0]))}
    return {
        "cv_auc": None if math.isnan(value) else round(value, 4),
        "n_patients": len(patients),
        "n_sites": len(prevalence),
        "folds": len(folds),
        "prevalence": prevalence,
    }


def site_estimates(config: StudyConfig, paths: StudyPaths, board: Leaderboard) -> dict[str, Any]:
    """The leaderboard's `per_site` and `site_shortcut` (for `dataclasses.replace`); None where not applicable."""
    known = cohort_sites(config, paths)
    if known is None:
        return {"per_site": None, "site_shortcut": None}
    by_site = config.settings.cv_group == "site"
    return {
        "per_site": winner_per_site(board, paths, known),
        "site_shortcut": None if by_site else site_shortcut(paths, known),
    }


def metric_name(site: str) -> str:
    """A site name as MLflow accepts it in a metric key (letters, digits, `_`, `-`, `.`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", site)


def parent_metrics(board: Leaderboard) -> dict[str, float]:
    """The parent run's site metrics: `site_<name>_auc`/`_n`/`_prevalence` (out-of-fold), `holdout_site_...`,
    and `site_shortcut_cv_auc`; sites with one class have no AUC metric."""
    out: dict[str, float] = {}
    for part, prefix in (("oof", "site"), ("holdout", "holdout_site")):
        for site, m in ((board.per_site or {}).get(part) or {}).items():
            for key in ("auc", "n", "prevalence"):
                if m.get(key) is not None:
                    out[f"{prefix}_{metric_name(site)}_{key}"] = float(m[key])
    if board.site_shortcut and board.site_shortcut.get("cv_auc") is not None:
        out["site_shortcut_cv_auc"] = float(board.site_shortcut["cv_auc"])
    return out


def holdout_per_site(winner: Mapping[str, Any] | None, board: Leaderboard) -> dict[str, Any] | None:
    """The hold-out's per-site table of a registration (winner.json) when it registered the leaderboard's winner."""
    held = (winner or {}).get("holdout") or {}
    if not board.rows or (winner or {}).get("trial") != board.rows[0].trial:
        return None
    return held.get("per_site")


def _table(part: Mapping[str, Mapping[str, Any]]) -> str:
    cells = []
    for site, m in part.items():
        value = f"AUC {m['auc']:.3f}" if m.get("auc") is not None else "AUC - (one class)"
        cells.append(f"{site} {value} (n {m['n']}, {100 * m['prevalence']:.0f}% T2)")
    return " | ".join(cells)


def outcome_lines(board: Leaderboard, winner: Mapping[str, Any] | None = None) -> list[str]:
    """The summary's lines about sites: the winner per site (hold-out from `winner`, winner.json, when it was
    registered after the leaderboard was written), and the site shortcut with what it means."""
    lines = []
    per_site = board.per_site or {}
    held = per_site.get("holdout") or holdout_per_site(winner, board)
    if per_site.get("oof"):
        lines.append(f"winner per site (out-of-fold): {_table(per_site['oof'])}")
    if held:
        lines.append(f"winner per site (held-out):    {_table(held)}")
    short = board.site_shortcut or {}
    if short.get("cv_auc") is not None:
        value = short["cv_auc"]
        line = (
            f"site alone predicts the stage with CV AUC {value:.2f} (a logistic regression on the site only, "
            f"on the same folds, {short['n_sites']} sites)"
        )
        if value >= SHORTCUT_WARN_AUC:
            line += ": the model may learn the site, not the tumour; consider --cv-group site"
        else:
            line += ": no sign that the site alone gives the stage away"
        lines.append(line)
    return lines
