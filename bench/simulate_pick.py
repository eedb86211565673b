"""What a simulated search would register when it stops, and how that model scores on the independent phantom.

The rules: the best complete trial by its pooled out-of-fold AUC (`best_cv`, the single-trial choice), by its
mean fold AUC, by a lower bound, by family first; equal-weight averages of the K best complete trials (`topK`),
of the K best of each family (`familiesK`) or of all of them (`all`); the deep ensemble as the search builds it
(`ensemble`: the `PER_FAMILY` best of each family by pooled out-of-fold AUC, equal weights); and `registered`,
what `stagesearch run` registers by default (`--register-kind auto`): the single trial or the ensemble,
whichever has the better corrected estimate, by the search's own code (`search.stats.candidates.select`, fewer
resamples). An ensemble is scored by the mean of its members' independent P(T2). Only complete trials are
candidates here (the table has independent predictions at the last epoch only); radiomics is not in the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.table_rows import Row, Table

#: bootstrap resamples of the corrected estimate behind `registered` (the search uses 1,000; 100 keeps a
#: replay of hundreds of seeds fast, and only which kind wins is used here)
RESAMPLES = 100


@dataclass
class Finished:
    """A trial the simulated search finished (complete or stopped) and when."""

    number: int
    row: Row
    epochs: int
    ended_at: float
    complete: bool
    exempt: bool


def select(finished: Sequence[Finished], rule: str, at: float) -> Finished | None:
    """The single trial a search stopped at time `at` would register: its best complete trial by `rule`."""
    complete = [f for f in finished if f.complete and f.ended_at <= at]
    if not complete:
        return None
    if rule == "family":  # the family whose complete trials have the best median cv_auc, then its best trial
        by_family: dict[str, list[Finished]] = {}
        for f in complete:
            by_family.setdefault(f.row.backbone, []).append(f)
        complete = max(by_family.values(), key=lambda fs: float(np.median([f.row.cv_auc[-1] for f in fs])))

    def score(f: Finished) -> float:
        if rule == "best_fold_mean":
            return f.row.mean_fold_auc[-1]
        if rule == "lcb":  # a lower bound: the pooled AUC less the folds' standard error
            return f.row.cv_auc[-1] - f.row.fold_sd[-1] / math.sqrt(5)
        return f.row.cv_auc[-1]

    return max(complete, key=score)


def _auc(probs: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def ensemble_auc(t: Table, members: Sequence[Finished], counts: np.ndarray) -> float:
    """The independent AUC of an ensemble: its members' independent P(T2), weighted by how often picked."""
    probs = np.stack([f.row.indep_probs for f in members])
    return _auc(counts @ probs / counts.sum(), np.asarray(t.header["indep_labels"], dtype=int))


def pick_auc(t: Table, finished: Sequence[Finished], rule: str, at: float, seed: int) -> float | None:
    """The independent AUC of what a search stopped at `at` registers under `rule` (None: nothing complete)."""
    from search.stats.candidates import family_ensembles
    from search.stats.candidates import select as select_kind

    if rule.startswith("top"):  # the k best complete trials by cv_auc, averaged with equal weights
        complete = sorted(
            (f for f in finished if f.complete and f.ended_at <= at), key=lambda f: -f.row.cv_auc[-1]
        )[: int(rule[3:])]
        return ensemble_auc(t, complete, np.ones(len(complete))) if complete else None
    if rule.startswith("families"):  # the best k complete trials of every family, averaged with equal weights
        k = int(rule[8:] or 1)
        by_family: dict[str, list[Finished]] = {}
        for f in sorted(
            (f for f in finished if f.complete and f.ended_at <= at), key=lambda f: -f.row.cv_auc[-1]
        ):
            by_family.setdefault(f.row.backbone, []).append(f)
        members = [f for fs in by_family.values() for f in fs[:k]]
        return ensemble_auc(t, members, np.ones(len(members))) if members else None
    if rule == "all":  # every complete trial, averaged with equal weights
        members = [f for f in finished if f.complete and f.ended_at <= at]
        return ensemble_auc(t, members, np.ones(len(members))) if members else None
    if rule not in ("ensemble", "registered"):
        pick = select(finished, rule, at)
        return None if pick is None else pick.row.indep_auc.get(t.max_epochs)
    complete = [f for f in finished if f.complete and f.ended_at <= at]
    if not complete:
        return None
    labels = np.asarray(t.header["oof_labels"], dtype=int)
    oof = np.stack([f.row.oof for f in complete])
    families = [f.row.backbone for f in complete]  # one backbone per family in the `cpu` space
    if rule == "registered" and len(complete) >= 2:
        chosen = select_kind(
            oof, labels, ["single"] * len(complete), [True] * len(complete), families, None, RESAMPLES, seed
        )
        if chosen.registered == "single":
            return complete[int(chosen.kinds["single"].chosen)].row.indep_auc.get(t.max_epochs)
    counts = family_ensembles([[f.row.cv_auc[-1] for f in complete]], families)[0]
    return ensemble_auc(t, complete, counts)
