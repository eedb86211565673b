"""Candidates of several kinds on the same folds, the deep ensemble built from them, and one choice corrected for
the whole selection.

Every candidate has an out-of-fold table on the study's folds: single deep trials (complete or stopped early),
radiomics pipelines, and the **deep ensemble**: greedy ensemble selection with replacement (Caruana et al.,
ICML 2004) over the complete deep trials' out-of-fold P(T2). It starts from the best trial and adds, one round at
a time, the trial (again, if it helps most) whose inclusion gives the highest AUC of the members' mean P(T2)
(members weighted by how often they were picked); the best prefix of the rounds is kept, so it is never worse on
the patients it was built on than its best member. Those patients are the ones it is scored on, so its pooled
out-of-fold AUC is optimistic, more so than a single trial's.

The correction scores the procedure, not the winner (BBC-CV, Tsamardinos et al. 2018, extended to kinds): on
each bootstrap resample of the patients (of the sites under site-grouped CV) the best candidate of every kind is
chosen on the in-bag patients, the ensemble is built on them alone, the kind is chosen among those in-bag (a
simpler kind wins when within `TIE` of the best), and each choice is scored on the out-of-bag patients. The
means of those out-of-bag AUCs are each kind's corrected estimate and the whole selection's; the registered kind
is the one with the best corrected estimate, a simpler kind winning ties within `TIE`. The paired difference
of deep (single or ensemble, chosen in-bag) against radiomics is taken on the same resamples, so the larger
number of deep trials gives deep no advantage: each side's selection is paid for on patients it did not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.stats.candidates_text import KINDS, TIE
from search.stats.estimates import LEVEL, N_RESAMPLES, EstimateError, bootstrap_counts, weighted_auc

#: greedy ensemble selection: rounds (members picked, with replacement) and the library it picks from, the
#: complete trials with the best AUC on the patients it is built on
ROUNDS = 20
LIBRARY = 10
#: the library's fold models are kept (`search.study.trial_models.keep_best`) up to this much disk in all; a
#: member beyond it is trained again when the ensemble is registered
KEEP_MB = 2000.0
DEEP = ("single", "ensemble")


def batched_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted AUC of every row of `scores` (..., n) with patient `labels` (n) and `weights` broadcastable to
    `scores` (bootstrap counts, or 0/1): an array of the leading shape, NaN where a class has no weight. Ties
    count half, as in `weighted_auc` (which does one set of scores under many weightings)."""
    scores = np.asarray(scores, dtype=float)
    weights = np.broadcast_to(np.asarray(weights, dtype=float), scores.shape)
    labels = np.broadcast_to(np.asarray(labels, dtype=float), scores.shape)
    n = scores.shape[-1]
    order = np.argsort(scores, axis=-1, kind="stable")
    s = np.take_along_axis(scores, order, -1)
    y = np.take_along_axis(labels, order, -1)
    w = np.take_along_axis(weights, order, -1)
    idx = np.arange(n)
    first = np.concatenate([np.ones(s.shape[:-1] + (1,), bool), s[..., 1:] != s[..., :-1]], axis=-1)
    last = np.concatenate([s[..., 1:] != s[..., :-1], np.ones(s.shape[:-1] + (1,), bool)], axis=-1)
    start = np.maximum.accumulate(np.where(first, idx, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, idx + 1, n), -1), axis=-1), -1)
    zero = np.zeros(s.shape[:-1] + (1,))
    neg = np.concatenate([zero, np.cumsum(w * (1.0 - y), axis=-1)], axis=-1)
    below = 0.5 * (np.take_along_axis(neg, start, -1) + np.take_along_axis(neg, end, -1))
    w_pos = (w * y).sum(-1)
    w_neg = w.sum(-1) - w_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w_pos > 0) & (w_neg > 0), (w * y * below).sum(-1) / (w_pos * w_neg), np.nan)


def greedy_ensembles(
    probs: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    rounds: int = ROUNDS,
    library: int = LIBRARY,
) -> np.ndarray:
    """Greedy ensemble selection with replacement, once per weighting of the patients: `probs` (candidates x
    patients), `weights` (weightings x patients). Returns the member counts (weightings x candidates) of the
    best prefix of `rounds` rounds; the ensemble's P(T2) is `counts @ probs / counts.sum()`. The library is
    each weighting's `library` best candidates under it."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_w, n_c = weights.shape[0], probs.shape[0]
    single = np.nan_to_num(weighted_auc(probs, labels, weights), nan=-np.inf)  # weightings x candidates
    lib = np.argsort(-single, axis=1, kind="stable")[:, : min(library, n_c)]
    pool = probs[lib]  # weightings x library x patients
    rows = np.arange(n_w)
    total = pool[:, 0, :].copy()
    counts = np.zeros((n_w, n_c))
    counts[rows, lib[:, 0]] = 1.0
    best, best_score = counts.copy(), single[rows, lib[:, 0]]
    for size in range(1, rounds):
        trial = (total[:, None, :] + pool) / (size + 1)
        score = np.nan_to_num(batched_auc(trial, labels, weights[:, None, :]), nan=-np.inf)
        pick = np.argmax(score, axis=1)
        total += pool[rows, pick]
        counts[rows, lib[rows, pick]] += 1.0
        better = score[rows, pick] > best_score + 1e-12
        best[better], best_score = counts[better], np.where(better, score[rows, pick], best_score)
    return best


def mixture(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The ensembles' P(T2) (weightings x patients) from `greedy_ensembles`' counts."""
    counts = np.atleast_2d(counts)
    return (counts @ probs) / counts.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class KindResult:
    """One kind's best candidate (on all patients) and its corrected estimate (over the resamples)."""

    kind: str
    apparent: float  # the chosen candidate's AUC on all patients (its pooled out-of-fold AUC)
    chosen: int | None  # index of the chosen candidate (None for the ensemble)
    members: dict[int, int] = field(default_factory=dict)  # the ensemble: candidate index -> times picked
    mean: float = float("nan")
    ci: tuple[float, float] = (float("nan"), float("nan"))


@dataclass(frozen=True)
class Selection:
    """What `select` found: each kind, the whole selection's estimate, the registered kind, deep vs radiomics."""

    kinds: dict[str, KindResult]
    mean: float  # the whole selection (the kind chosen in-bag too), out of bag
    ci: tuple[float, float]
    registered: str  # the kind with the best corrected estimate (a simpler one within TIE)
    difference: dict[str, Any] | None  # deep - radiomics: mean, ci (None without both)
    level: float
    n_resamples: int
    used: int
    unit: str
    units: int
    probs: np.ndarray  # the registered kind's out-of-fold P(T2) on all patients


def prefer_simple(scores: dict[str, float], tie: float = TIE) -> str:
    """The kind with the highest score, or the simplest (in `KINDS` order) within `tie` of it."""
    top = max(scores.values())
    return next(k for k in KINDS if k in scores and scores[k] >= top - tie)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _in_bag_choices(
    probs: np.ndarray, y: np.ndarray, kinds: np.ndarray, pool: np.ndarray, counts: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Per kind, each resample's in-bag and out-of-bag AUC of its in-bag choice, and the ensembles' OOB P(T2)."""
    in_bag = weighted_auc(probs, y, counts)
    out_bag = weighted_auc(probs, y, (counts == 0).astype(float))
    rows = np.arange(len(counts))
    ins, outs = {}, {}
    for kind in KINDS[:2]:
        cols = np.flatnonzero(kinds == kind)
        if len(cols):
            pick = cols[np.argmax(in_bag[:, cols], axis=1)]  # ties: the first candidate
            ins[kind], outs[kind] = in_bag[rows, pick], out_bag[rows, pick]
    ensemble = np.zeros((len(counts), probs.shape[1]))
    if len(pool) >= 2:
        members = greedy_ensembles(probs[pool], y, counts)
        ensemble = mixture(members, probs[pool])
        ins["ensemble"] = batched_auc(ensemble, y, counts)
        outs["ensemble"] = batched_auc(ensemble, y, (counts == 0).astype(float))
    return ins, outs, ensemble


def _full_data(
    probs: np.ndarray, y: np.ndarray, kinds: np.ndarray, pool: np.ndarray
) -> dict[str, KindResult]:
    """Each kind's choice on all patients: the best candidate, and the ensemble built on all of them."""
    apparent = weighted_auc(probs, y, np.ones((1, len(y))))[0]
    out = {}
    for kind in KINDS[:2]:
        cols = np.flatnonzero(kinds == kind)
        if len(cols):
            best = int(cols[np.argmax(apparent[cols])])
            out[kind] = KindResult(kind, float(apparent[best]), best)
    if len(pool) >= 2:
        counts = greedy_ensembles(probs[pool], y, np.ones((1, len(y))))[0]
        members = {int(pool[i]): int(c) for i, c in enumerate(counts) if c}
        score = float(batched_auc(mixture(counts, probs[pool])[0], y, np.ones(len(y))))
        out["ensemble"] = KindResult("ensemble", score, None, members)
    return out


def select(
    probs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    kinds: Sequence[str],
    complete: Sequence[bool],
    units: Sequence[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Selection:
    """The nested selection over candidates `probs` (candidates x patients, aligned) of `kinds` ("radiomics" or
    "single"); the ensemble is built from the `complete` single candidates (their fold models exist). `units`:
    each patient's resampling unit (None: the patient). Seeded. EstimateError when nothing can be scored."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    y, kinds_a = np.asarray(labels, dtype=int), np.asarray(list(kinds))
    if probs.shape != (len(kinds_a), len(y)) or not len(y) or not np.isfinite(probs).all():
        raise EstimateError(f"{probs.shape} predictions for {len(kinds_a)} candidates and {len(y)} patients")
    pool = np.flatnonzero((kinds_a == "single") & np.asarray(complete, dtype=bool))
    names = list(units) if units is not None else [str(i) for i in range(len(y))]
    unit_names, unit_index = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    counts = bootstrap_counts(unit_index, n_resamples, np.random.default_rng(seed))
    ins, outs, _ = _in_bag_choices(probs, y, kinds_a, pool, counts)
    scored = np.logical_and.reduce([np.isfinite(v) for v in [*ins.values(), *outs.values()]])
    if not scored.any():
        raise EstimateError(f"none of {n_resamples} resamples had both classes in bag and out of bag")
    ins = {k: v[scored] for k, v in ins.items()}
    outs = {k: v[scored] for k, v in outs.items()}
    full = _full_data(probs, y, kinds_a, pool)
    kinds_out = {
        k: KindResult(
            r.kind, r.apparent, r.chosen, r.members, float(outs[k].mean()), _interval(outs[k], level)
        )
        for k, r in full.items()
    }
    whole = _procedure(ins, outs, list(kinds_out))
    registered = prefer_simple({k: r.mean for k, r in kinds_out.items()})
    return Selection(
        kinds=kinds_out,
        mean=float(whole.mean()),
        ci=_interval(whole, level),
        registered=registered,
        difference=_difference(ins, outs, level),
        level=level,
        n_resamples=n_resamples,
        used=int(scored.sum()),
        unit="patient" if units is None else "site",
        units=len(unit_names),
        probs=_registered_probs(kinds_out[registered], probs),
    )


def _procedure(ins: dict[str, np.ndarray], outs: dict[str, np.ndarray], kinds: list[str]) -> np.ndarray:
    """Each resample's out-of-bag AUC of the kind chosen in-bag (a simpler kind within TIE of the best)."""
    order = [k for k in KINDS if k in kinds]
    table_in = np.stack([ins[k] for k in order], axis=1)
    table_out = np.stack([outs[k] for k in order], axis=1)
    within = table_in >= table_in.max(axis=1, keepdims=True) - TIE
    pick = np.argmax(within, axis=1)  # the first (simplest) kind within the tie
    return table_out[np.arange(len(pick)), pick]


def _difference(
    ins: dict[str, np.ndarray], outs: dict[str, np.ndarray], level: float
) -> dict[str, Any] | None:
    """Deep (single or ensemble, chosen in-bag) minus radiomics, out of bag on the same resamples."""
    deep = [k for k in DEEP if k in ins]
    if "radiomics" not in ins or not deep:
        return None
    diff = _procedure(ins, outs, deep) - outs["radiomics"]
    low, high = _interval(diff, level)
    return {"mean": float(diff.mean()), "ci": [low, high], "level": level}


def _registered_probs(result: KindResult, probs: np.ndarray) -> np.ndarray:
    if result.chosen is not None:
        return probs[result.chosen]
    weights = np.zeros(len(probs))
    for index, times in result.members.items():
        weights[index] = times
    return mixture(weights, probs)[0]
