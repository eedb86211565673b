"""Candidates of several kinds on the same folds, the deep ensemble built from them, and one choice corrected for
the whole selection.

Every candidate has an out-of-fold table on the study's folds: single deep trials (complete or stopped early),
radiomics pipelines, and the **deep ensemble**: the `PER_FAMILY` best complete deep trials of each backbone
family, their P(T2) averaged with equal weights. The table benchmark (`python -m bench.simulate`, scored on an
independent phantom) chose this rule: greedy ensemble selection (Caruana et al., ICML 2004) fitted its weights
to the out-of-fold patients and generalised no better than the best single trial, the top-k by AUC degraded as
a search found more near-copies of one configuration, while the best two of each family held up at every
budget. The members are ranked on the patients the ensemble is built on, so its pooled out-of-fold AUC is
optimistic, more so than a single trial's.

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

#: the deep ensemble's members: this many complete trials of each family, the best on the patients it is built on
PER_FAMILY = 2
#: the members' fold models are kept (`search.study.trial_models.keep_best`) up to this much disk in all; a
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


def family_ensembles(
    scores: np.ndarray, families: Sequence[str] | np.ndarray, per_family: int = PER_FAMILY
) -> np.ndarray:
    """The deep ensemble under each weighting of the patients: `scores` (weightings x candidates, the candidates'
    AUC under each weighting; NaN ranks last) and each candidate's family. Returns the member counts (weightings x
    candidates): 1 for the `per_family` best candidates of every family (ties: the earlier candidate), else 0;
    the ensemble's P(T2) is `mixture(counts, probs)`."""
    scores = np.nan_to_num(np.atleast_2d(np.asarray(scores, dtype=float)), nan=-np.inf)
    families_a = np.asarray(list(families), dtype=str)
    counts = np.zeros(scores.shape)
    rows = np.arange(len(scores))[:, None]
    for family in np.unique(families_a):
        cols = np.flatnonzero(families_a == family)
        best = np.argsort(-scores[:, cols], axis=1, kind="stable")[:, :per_family]
        counts[rows, cols[best]] = 1.0
    return counts


def mixture(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The ensembles' P(T2) (weightings x patients) from their member counts (weightings x candidates)."""
    counts = np.atleast_2d(counts)
    return (counts @ probs) / counts.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class KindResult:
    """One kind's best candidate (on all patients) and its corrected estimate (over the resamples)."""

    kind: str
    apparent: float  # the chosen candidate's AUC on all patients (its pooled out-of-fold AUC)
    chosen: int | None  # index of the chosen candidate (None for the ensemble)
    members: dict[int, int] = field(default_factory=dict)  # the ensemble: candidate index -> weight (1 each)
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
    probs: np.ndarray,
    y: np.ndarray,
    kinds: np.ndarray,
    pool: np.ndarray,
    families: np.ndarray,
    counts: np.ndarray,
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
        members = family_ensembles(in_bag[:, pool], families[pool])
        ensemble = mixture(members, probs[pool])
        ins["ensemble"] = batched_auc(ensemble, y, counts)
        outs["ensemble"] = batched_auc(ensemble, y, (counts == 0).astype(float))
    return ins, outs, ensemble


def _full_data(
    probs: np.ndarray, y: np.ndarray, kinds: np.ndarray, pool: np.ndarray, families: np.ndarray
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
        counts = family_ensembles(apparent[pool], families[pool])[0]
        members = {int(pool[i]): int(c) for i, c in enumerate(counts) if c}
        score = float(batched_auc(mixture(counts, probs[pool])[0], y, np.ones(len(y))))
        out["ensemble"] = KindResult("ensemble", score, None, members)
    return out


def select(
    probs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    kinds: Sequence[str],
    complete: Sequence[bool],
    families: Sequence[str],
    units: Sequence[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Selection:
    """The nested selection over candidates `probs` (candidates x patients, aligned) of `kinds` ("radiomics" or
    "single") and `families` (each candidate's backbone family; radiomics ones are ignored); the ensemble is
    built from the `complete` single candidates (their fold models exist). `units`:
    each patient's resampling unit (None: the patient). Seeded. EstimateError when nothing can be scored."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    y, kinds_a, families_a = (
        np.asarray(labels, dtype=int),
        np.asarray(list(kinds)),
        np.asarray(list(families)),
    )
    if (
        probs.shape != (len(kinds_a), len(y))
        or len(families_a) != len(kinds_a)
        or not len(y)
        or not np.isfinite(probs).all()
    ):
        raise EstimateError(f"{probs.shape} predictions for {len(kinds_a)} candidates and {len(y)} patients")
    pool = np.flatnonzero((kinds_a == "single") & np.asarray(complete, dtype=bool))
    names = list(units) if units is not None else [str(i) for i in range(len(y))]
    unit_names, unit_index = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    counts = bootstrap_counts(unit_index, n_resamples, np.random.default_rng(seed))
    ins, outs, _ = _in_bag_choices(probs, y, kinds_a, pool, families_a, counts)
    scored = np.logical_and.reduce([np.isfinite(v) for v in [*ins.values(), *outs.values()]])
    if not scored.any():
        raise EstimateError(f"none of {n_resamples} resamples had both classes in bag and out of bag")
    ins = {k: v[scored] for k, v in ins.items()}
    outs = {k: v[scored] for k, v in outs.items()}
    full = _full_data(probs, y, kinds_a, pool, families_a)
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
