"""The winner's selection-bias-corrected AUC, from the out-of-fold tables the trials already wrote (no training).

Why: the best of many trials' cv_auc was selected on the same folds it is scored on, so it is optimistic, the
more so the more trials and the fewer patients (Varma & Simon 2006; Cawley & Talbot, JMLR 2010). BBC-CV
(Tsamardinos, Greasidou & Borboudakis, Machine Learning 107, 2018) repeats the selection on bootstrap resamples
of the patients (of whole sites under `--cv-group site`): on each resample it picks the configuration with the
best AUC on the in-bag patients and scores that one on the out-of-bag patients. The mean of those out-of-bag
AUCs estimates what "run the search and take the best" achieves on patients it did not select on; their 2.5 and
97.5 percentiles are the 95% interval. Complete and early-stopped (pruned) trials both count: both were
selected on the same folds (a pruned trial's table is from its last epoch).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from search.study import Leaderboard, StudyConfig, StudyFormatError, StudyPaths, finished_trials, read_oof

#: Resamples of the study's estimate (Tsamardinos et al. use 1,000) and the interval's coverage.
N_RESAMPLES = 1000
LEVEL = 0.95
METHOD = "BBC-CV (Tsamardinos et al. 2018)"


class EstimateError(ValueError):
    """No estimate can be made (no usable configuration, or no resample with both classes in and out of bag)."""


@dataclass(frozen=True)
class BBCResult:
    """What `bbc_cv` found: the corrected AUC, its interval, and how many resamples it rests on."""

    mean: float  # mean out-of-bag AUC of the configuration selected in-bag
    ci: tuple[float, float]  # percentile interval of those AUCs at `level`
    level: float
    n_resamples: int  # resamples drawn
    used: int  # resamples scored (both classes in bag and out of bag)
    skipped: int  # resamples where in-bag or out-of-bag patients lacked a class (or out-of-bag was empty)
    unit: str  # what was resampled: "patient" or "site"
    units: int  # how many of them
    apparent: list[float]  # each configuration's AUC on all patients (its pooled out-of-fold AUC)
    picks: list[int]  # how often each configuration was selected in-bag (over the scored resamples)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each configuration (rows of `scores`, configurations x patients) under each weighting of the
    patients (rows of `weights`, resamples x patients: bootstrap counts, or 0/1 for out of bag): a resamples x
    configurations array, NaN where a class has no weight. Ranks with ties counted half, as Mann-Whitney does,
    through cumulative negative weight along each configuration's sorted scores (one sort per configuration)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    labels = np.asarray(labels, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_weightings, n = weights.shape
    w_pos = weights @ labels
    w_neg = weights.sum(axis=1) - w_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = np.where((w_pos > 0) & (w_neg > 0), w_pos * w_neg, np.nan)
    out = np.empty((n_weightings, scores.shape[0]))
    zero = np.zeros((n_weightings, 1))
    for c, row in enumerate(scores):
        order = np.argsort(row, kind="stable")
        s, y, w = row[order], labels[order], weights[:, order]
        first = np.r_[True, s[1:] != s[:-1]]  # where each run of tied scores starts
        starts = np.flatnonzero(first)
        group = np.cumsum(first) - 1
        start, end = starts[group], np.r_[starts[1:], n][group]  # each patient's tie run [start, end)
        neg = np.concatenate([zero, np.cumsum(w * (1.0 - y), axis=1)], axis=1)
        # a positive beats the negatives below its tie run and half of those tied with it
        out[:, c] = ((w * y) * 0.5 * (neg[:, start] + neg[:, end])).sum(axis=1) / denom
    return out


def bootstrap_counts(units: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Resamples x patients bootstrap counts: whole units (`units`: each patient's unit index 0..U-1) drawn U
    times with replacement, every patient of a unit counted as often as its unit was drawn."""
    n_units = int(units.max()) + 1
    drawn = rng.integers(0, n_units, size=(n_resamples, n_units))
    per_unit = np.zeros((n_resamples, n_units))
    np.add.at(per_unit, (np.arange(n_resamples)[:, None], drawn), 1.0)
    return per_unit[:, units]


def bbc_cv(
    probs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    units: Sequence[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> BBCResult:
    """BBC-CV of out-of-fold predictions `probs` (configurations x patients, aligned on the patients) with
    patient `labels` (0/1). `units`: each patient's resampling unit (its site under site-grouped CV; None: the
    patient itself). Seeded: the same inputs and seed give the same result. EstimateError when nothing can be
    scored."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    y = np.asarray(labels, dtype=int)
    if probs.shape[1] != len(y) or not len(y):
        raise EstimateError(f"{probs.shape[1]} predictions per configuration for {len(y)} patients")
    if not np.isfinite(probs).all():
        raise EstimateError("non-finite predictions")
    names = list(units) if units is not None else [str(i) for i in range(len(y))]
    unit_names, unit_index = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    counts = bootstrap_counts(unit_index, n_resamples, np.random.default_rng(seed))
    in_bag = weighted_auc(probs, y, counts)
    out_of_bag = weighted_auc(probs, y, (counts == 0).astype(float))
    scored = np.isfinite(in_bag[:, 0]) & np.isfinite(out_of_bag[:, 0])
    if not scored.any():
        unit = "patients" if units is None else f"{len(unit_names)} sites"
        raise EstimateError(
            f"none of {n_resamples} resamples of the {unit} had both classes in bag and out of bag"
        )
    pick = np.argmax(in_bag[scored], axis=1)  # ties: the first configuration
    aucs = out_of_bag[scored][np.arange(len(pick)), pick]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return BBCResult(
        mean=float(aucs.mean()),
        ci=(float(low), float(high)),
        level=level,
        n_resamples=n_resamples,
        used=int(scored.sum()),
        skipped=int((~scored).sum()),
        unit="patient" if units is None else "site",
        units=len(unit_names),
        apparent=[float(a) for a in weighted_auc(probs, y, np.ones((1, len(y))))[0]],
        picks=np.bincount(pick, minlength=probs.shape[0]).tolist(),
    )


@dataclass(frozen=True)
class OOFMatrix:
    """Finished trials' out-of-fold predictions aligned on the patients, and the trials left out with why."""

    trials: list[int]
    patients: list[str]
    labels: np.ndarray
    probs: np.ndarray  # trials x patients
    excluded: list[dict[str, Any]]


def _read_table(paths: StudyPaths, number: int) -> tuple[dict[str, tuple[int, float]] | None, str]:
    """Trial `number`'s table as patient -> (label, prob), or None with why it cannot be used."""
    rows = read_oof(paths.oof(number))
    if not rows:
        return None, "no out-of-fold table"
    table = {r["patient_id"]: (r["label"], r["prob"]) for r in rows}
    if len(table) != len(rows):
        return None, "a patient appears more than once in its out-of-fold table"
    if not all(np.isfinite(p) for _, p in table.values()):
        return None, "non-finite probabilities in its out-of-fold table"
    return table, ""


def oof_matrix(paths: StudyPaths, numbers: Sequence[int]) -> OOFMatrix:
    """The tables of trials `numbers`, aligned by patient_id. Every table should list the same patients (the
    study's search patients); a table that does not, or that labels a patient differently, means something is
    broken, so that trial is excluded and named rather than guessed around."""
    excluded: list[dict[str, Any]] = []
    tables: dict[int, dict[str, tuple[int, float]]] = {}
    for n in sorted(numbers):
        table, why = _read_table(paths, n)
        if table is None:
            excluded.append({"trial": n, "why": why})
        else:
            tables[n] = table
    if not tables:
        return OOFMatrix([], [], np.zeros(0, dtype=int), np.zeros((0, 0)), excluded)
    common = Counter(frozenset(t) for t in tables.values()).most_common(1)[0][0]
    patients = sorted(common)
    first = next(t for t in tables.values() if frozenset(t) == common)
    labels = np.array([first[p][0] for p in patients], dtype=int)
    kept, rows = [], []
    for n, table in tables.items():
        if frozenset(table) != common:
            excluded.append(
                {
                    "trial": n,
                    "why": f"its table lists other patients ({len(table)}; the other trials' "
                    f"{len(common)}, {len(set(table) ^ common)} differ)",
                }
            )
        elif any(table[p][0] != label for p, label in zip(patients, labels, strict=True)):
            excluded.append(
                {"trial": n, "why": "its table labels patients differently from the other trials'"}
            )
        else:
            kept.append(n)
            rows.append([table[p][1] for p in patients])
    excluded.sort(key=lambda e: e["trial"])
    return OOFMatrix(kept, patients, labels, np.array(rows), excluded)


def patient_sites(config: StudyConfig, paths: StudyPaths) -> dict[str, str]:
    """Each patient's site as the out-of-fold tables name the patient (pseudonyms in a pseudonymised study)."""
    from search.study.inputs import load_cohort
    from search.study.pseudonyms import study_pseudonyms
    from trainers.manifest import ManifestError

    try:
        cohort = load_cohort(config)
        rename = study_pseudonyms(config, paths, cohort.patients)
        sites = cohort.patient_groups("site")
    except (
        ManifestError,
        StudyFormatError,
        ValueError,
        OSError,
    ) as exc:  # the search is over: say, not crash
        raise EstimateError(
            f"the patients' sites could not be read from the study's manifest: {exc}"
        ) from exc
    return {(rename or {}).get(p, p): site for p, site in sites.items()}


def corrected_fields(
    paths: StudyPaths,
    config: StudyConfig,
    numbers: Sequence[int],
    best_cv_auc: float | None,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any]:
    """The leaderboard's `corrected_auc`, `corrected_auc_ci` and `corrected` for the finished trials `numbers`
    (complete and pruned) of a study. When no estimate can be made, `corrected` says why and the others are
    None. Resampling is by site when the study's CV is grouped by site (folds never split a site, so neither
    may the bootstrap), seeded by the study's seed."""
    settings = config.settings
    unit = "site" if settings.cv_group == "site" else "patient"
    table = oof_matrix(paths, numbers)
    about: dict[str, Any] = {
        "method": METHOD,
        "n_resamples": n_resamples,
        "unit": unit,
        "seed": settings.seed,
        "configurations": len(table.trials),
        "trials": table.trials,
        "excluded": table.excluded,
        "patients": len(table.patients),
        "best_cv_auc": best_cv_auc,
    }
    try:
        if not table.trials:
            raise EstimateError("no finished trial has an out-of-fold table")
        units = None
        if unit == "site":
            sites = patient_sites(config, paths)
            units = [sites[p] for p in table.patients]
        result = bbc_cv(table.probs, table.labels, units, n_resamples, about["seed"])
    except (EstimateError, KeyError) as exc:
        why = f"no site for patient {exc}" if isinstance(exc, KeyError) else str(exc)
        return {"corrected_auc": None, "corrected_auc_ci": None, "corrected": {**about, "error": why}}
    about.update(
        level=result.level,
        used=result.used,
        skipped=result.skipped,
        units=result.units,
        best_table_auc=max(result.apparent),
        beats_chance=result.ci[0] > 0.5,
        picked_most=table.trials[int(np.argmax(result.picks))],
    )
    if best_cv_auc is None:
        about["best_cv_auc"] = max(result.apparent)
    return {"corrected_auc": result.mean, "corrected_auc_ci": list(result.ci), "corrected": about}


def with_estimate(
    board: Leaderboard, study: optuna.Study, paths: StudyPaths, config: StudyConfig
) -> Leaderboard:
    """`board` with the corrected estimate over the study's complete and pruned trials (for
    `search.session.outcome.summarise`, before the leaderboard is written and the winner registered)."""
    best = board.rows[0].cv_auc if board.rows else None
    numbers = list(finished_trials(study))
    return dataclasses.replace(board, **corrected_fields(paths, config, numbers, best))


def parent_metrics(board: Leaderboard) -> dict[str, float]:
    """The parent MLflow run's metrics of the estimate ({} when there is none)."""
    if board.corrected_auc is None or not board.corrected_auc_ci:
        return {}
    low, high = board.corrected_auc_ci
    return {"corrected_auc": board.corrected_auc, "corrected_auc_ci_low": low, "corrected_auc_ci_high": high}


def summary_lines(board: Leaderboard, winner: dict[str, Any] | None) -> list[str]:
    """The final summary's lines: the optimistic best cv_auc beside the corrected estimate (the one to quote,
    unless the candidates' whole selection is), and, when the corrected interval or the hold-out CI includes
    0.5, that the search could not show the winner beats chance."""
    about = board.corrected or {}
    lines = []
    if board.corrected_auc is not None and board.corrected_auc_ci:
        low, high = board.corrected_auc_ci
        best = about.get("best_cv_auc")
        shown = f"{best:.3f}" if isinstance(best, float) else "-"
        lines.append(
            f"best cv_auc {shown} (optimistic: the best of {about.get('configurations')} trials, selected "
            "on the same folds it is scored on)"
        )
        lines.append(
            f"corrected estimate {board.corrected_auc:.3f} (95% CI {low:.3f}-{high:.3f}; "
            f"{METHOD}, {about.get('used')} bootstrap resamples of {about.get('unit')}s)" + _quote(board)
        )
        if about.get("excluded"):
            named = [f"trial {e['trial']}: {e['why']}" for e in about["excluded"]]
            more = f"; {len(named) - 5} more in leaderboard.json" if len(named) > 5 else ""
            lines.append(f"  (left out of it: {'; '.join(named[:5])}{more})")
    elif about.get("error"):
        lines.append(f"corrected estimate: not computed ({about['error']})")
    doubts = []
    if board.corrected_auc_ci and not about.get("beats_chance"):
        doubts.append(_against_chance("corrected 95% interval", *board.corrected_auc_ci))
    held = (winner or {}).get("holdout")
    if held and not held["ci_low"] > 0.5:
        doubts.append(_against_chance("held-out 95% CI", held["ci_low"], held["ci_high"]))
    if doubts:
        lines.append(
            "WARNING: the search could not show that the winner beats chance: "
            + " and ".join(doubts)
            + ". Do not use it as a working model"
            + ("; it is registered for inspection only." if winner else ".")
        )
    return lines


def _quote(board: Leaderboard) -> str:
    """` <- quote this` on the single trial's estimate, unless the candidates' whole selection (the estimate of
    what is registered, whichever kind) carries it."""
    return "" if board.whole_selection else " <- quote this"


def _against_chance(what: str, low: float, high: float) -> str:
    """`its <what> (low-high) includes 0.5` (or `lies below 0.5`)."""
    where = "lies below 0.5" if high < 0.5 else "includes 0.5"
    return f"its {what} ({low:.3f}-{high:.3f}) {where}"
