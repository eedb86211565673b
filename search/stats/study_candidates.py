"""A study's candidates of every kind, read from its out-of-fold tables, and `leaderboard.json`'s `candidates`.

Single deep trials (complete and stopped early), the deep ensemble of the best complete ones of each family
(`search.stats.candidates`), and radiomics: the radiomics trials (`search.session.radiomics_trials`, named
`r<n>`), or without them the fixed baseline's logistic regression on hand-made features (`baseline-oof.csv`,
written with the baseline), which is the radiomics study point. The nested selection
(`select`) gives each kind's corrected estimate, the whole selection's, the kind to register and the paired
difference of deep learning against radiomics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search.stats.candidates import Selection, select
from search.stats.candidates_text import difference_words
from search.stats.estimates import N_RESAMPLES, EstimateError, oof_matrix, patient_sites
from search.study import StudyConfig, StudyPaths, read_oof, read_radiomics

METHOD = "nested BBC-CV over candidate kinds (the ensemble built and the kind chosen inside each resample)"
RADIOMICS = (
    "baseline"  # the radiomics candidate of a study without radiomics trials (search.session.baseline)
)


def baseline_oof(paths: StudyPaths) -> Any:
    """Where the baseline's out-of-fold table is kept (next to the trials' tables)."""
    return paths.root / "baseline-oof.csv"


def _aligned(path: Any, patients: list[str], labels: np.ndarray) -> np.ndarray | None:
    """A table's P(T2) on the trials' patients, or None when it has no table on the same patients."""
    rows = read_oof(path)
    table = {r["patient_id"]: (r["label"], r["prob"]) for r in rows or []}
    if set(table) != set(patients):
        return None
    if any(table[p][0] != lab for p, lab in zip(patients, labels, strict=True)):
        return None
    return np.asarray([table[p][1] for p in patients], dtype=float)


def candidate_fields(
    paths: StudyPaths,
    config: StudyConfig,
    finished: dict[int, str],
    families: dict[int, str],
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any]:
    """`leaderboard.json`'s `candidates` for the study's `finished` trials (number -> "complete" or "pruned") of
    `families` (number -> backbone family; the deep ensemble takes the best complete trials of each):
    every kind's choice and corrected estimate, the whole selection's, the kind to register, deep against
    radiomics. `{"error": why}` when nothing can be estimated."""
    settings = config.settings
    seed, unit = settings.seed, settings.cv_group
    table = oof_matrix(paths, list(finished))
    if not table.trials:
        return {"method": METHOD, "error": "no finished trial has an out-of-fold table"}
    probs, kinds = table.probs, ["single"] * len(table.trials)
    names: list[Any] = list(table.trials)
    for name, row in _radiomics_rows(paths, table.patients, table.labels):
        probs, kinds, names = np.vstack([probs, row]), [*kinds, "radiomics"], [*names, name]
    complete = [finished.get(n) == "complete" for n in names]
    groups = [
        families.get(n, "-") if kind == "single" else kind for n, kind in zip(names, kinds, strict=True)
    ]
    try:
        units = None
        if unit == "site":
            sites = patient_sites(config, paths)
            units = [sites[p] for p in table.patients]
        result = select(probs, table.labels, kinds, complete, groups, units, n_resamples, seed)
    except (EstimateError, KeyError) as exc:
        why = f"no site for patient {exc}" if isinstance(exc, KeyError) else str(exc)
        return {"method": METHOD, "error": why}
    fields = _fields(result, names, n_resamples, seed)
    chosen = fields["kinds"].get("radiomics", {}).get("candidate", "")
    if chosen.startswith("r"):
        fields["kinds"]["radiomics"]["config"] = read_radiomics(paths)[int(chosen[1:])]["config"]
    return {**fields, "families": radiomics_families(paths)}


def _radiomics_rows(
    paths: StudyPaths, patients: list[str], labels: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    """The radiomics candidates aligned on the trials' patients: the radiomics trials (`r<n>`), else the
    baseline."""
    rows = []
    for number in read_radiomics(paths):
        row = _aligned(paths.radiomics(number) / "oof.csv", patients, labels)
        if row is not None:
            rows.append((f"r{number}", row))
    if not rows:
        row = _aligned(baseline_oof(paths), patients, labels)
        rows = [(RADIOMICS, row)] if row is not None else []
    return rows


def radiomics_families(paths: StudyPaths) -> list[dict[str, Any]]:
    """The best radiomics trial of each classifier, best first: {family, trial, cv_auc, config, trials}."""
    best: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for number, record in read_radiomics(paths).items():
        kind = record["config"]["classifier"]
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in best or record["cv_auc"] > best[kind]["cv_auc"]:
            best[kind] = {
                "family": kind,
                "trial": f"r{number}",
                "cv_auc": record["cv_auc"],
                "config": record["config"],
            }
    return sorted(({**b, "trials": counts[k]} for k, b in best.items()), key=lambda b: -b["cv_auc"])


def _fields(result: Selection, names: list[Any], n_resamples: int, seed: int) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind, r in result.kinds.items():
        entry: dict[str, Any] = {
            "corrected_auc": r.mean,
            "corrected_auc_ci": list(r.ci),
            "apparent_auc": r.apparent,
        }
        if r.chosen is not None:
            entry["candidate"] = names[r.chosen]
        else:
            members = sorted(r.members.items(), key=lambda m: (-m[1], names[m[0]]))
            entry["members"] = [{"trial": names[i], "weight": times} for i, times in members]
        kinds[kind] = entry
    difference = (
        dict(result.difference, words=difference_words(result.difference)) if result.difference else None
    )
    return {
        "method": METHOD,
        "n_resamples": n_resamples,
        "seed": seed,
        "used": result.used,
        "unit": result.unit,
        "units": result.units,
        "level": result.level,
        "kinds": kinds,
        "selection": {"corrected_auc": result.mean, "corrected_auc_ci": list(result.ci)},
        "registered": result.registered,
        "difference": difference,
    }


def registrable(candidates: dict[str, Any] | None) -> str | None:
    """The kind to register: the one the nested selection chose (None without candidates)."""
    return (candidates or {}).get("registered")
