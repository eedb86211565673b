"""How a registered model did on labelled scans given to `stagesearch predict`: AUC with a bootstrap 95% CI and
the confusion matrix at the version's own threshold (the one it stages patients at).

The AUC, its interval and the counts come from `trainers.metrics`, as every other figure of the project does
(2,000 resamples of patients in milliseconds, the same percentile method as the hold-out's CI at registration).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trainers.metrics import CI_RESAMPLES, auc, bootstrap_auc_ci, confusion


@dataclass(frozen=True)
class LabelScore:
    """AUC (NaN with one class), its 95% CI and the confusion matrix counts at `threshold`."""

    n: int
    n_t2: int
    auc: float
    ci: tuple[float, float]
    threshold: float
    tp: int
    fn: int
    tn: int
    fp: int
    digits: int = 4  # decimals the threshold is printed with (as in the prediction table)

    def lines(self) -> list[str]:
        """The score as printed: counts, AUC with CI, sensitivity/specificity and the 2 x 2 table."""
        n_t1 = self.n - self.n_t2
        out = [f"scored against the label column: {self.n} patients ({n_t1} T1, {self.n_t2} T2)"]
        if math.isnan(self.auc):
            out.append("AUC: not defined (the labelled patients are of one class)")
        else:
            lo, hi = self.ci
            ci = "95% CI not defined" if math.isnan(lo) else f"95% CI {lo:.3f}-{hi:.3f}"
            out.append(
                f"AUC {self.auc:.3f} ({ci}; percentile bootstrap over patients, {CI_RESAMPLES} resamples)"
            )
        sens = f"{self.tp / self.n_t2:.3f} ({self.tp}/{self.n_t2})" if self.n_t2 else "-"
        spec = f"{self.tn / n_t1:.3f} ({self.tn}/{n_t1})" if n_t1 else "-"
        out.append(
            f"at the threshold P(T2) >= {self.threshold:.{self.digits}f}: sensitivity {sens}, specificity {spec}, "
            f"accuracy {(self.tp + self.tn) / self.n:.3f} ({self.tp + self.tn}/{self.n})"
        )
        out += [
            "confusion matrix (rows: label, columns: predicted stage):",
            f"{'':10}{'pred T1':>8}{'pred T2':>8}",
            f"{'label T1':10}{self.tn:>8}{self.fp:>8}",
            f"{'label T2':10}{self.fn:>8}{self.tp:>8}",
        ]
        return out


def label_score(
    ids: Sequence[str],
    probs: Sequence[float],
    labels: Mapping[str, int],
    threshold: float,
    seed: int = 0,
    digits: int = 4,
) -> LabelScore | None:
    """Score the patients of `ids` that have a label (0 = T1, 1 = T2); None when none has one."""
    keep = [i for i, pid in enumerate(ids) if labels.get(pid, -1) in (0, 1)]
    if not keep:
        return None
    y = np.asarray([labels[ids[i]] for i in keep], dtype=int)
    p = np.asarray([probs[i] for i in keep], dtype=float)
    counts = confusion(y, p, threshold)
    return LabelScore(
        n=len(y),
        n_t2=int(y.sum()),
        auc=auc(y, p),
        ci=bootstrap_auc_ci(y, p, n=CI_RESAMPLES, seed=seed),
        threshold=float(threshold),
        digits=digits,
        **counts,
    )
