"""What the promotion gate reads from a registered version's tags, and the rules it applies.

A version is scored on one kind of estimate, its `estimate` tag (written at registration; derived from the
scores it has for versions registered before that tag existed), most honest first:

- `holdout`: `holdout_auc`, the AUC on patients no trial saw;
- `corrected_cv`: `corrected_auc`, the bootstrap bias-corrected CV AUC of the search's selected model;
- `cv`: `cv_auc`, the winner's cross-validated AUC, optimistic because it was selected on the same folds.

Like with like: two versions are compared only when they were made on the same cohort (`cohort_hash`) and are
scored on the same kind of estimate. An AUC on other patients, or a best-of-N cv_auc against a hold-out AUC,
says nothing about which model is better.

Chance guard: a version tagged `beats_chance=false` (its corrected interval or hold-out CI includes 0.5) may
not take an alias that serves predictions without `--force`; `unknown` (no interval was available) is let
through. Everything here is pure: it reads tags, never the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

HOLDOUT = "holdout_auc"
CORRECTED = "corrected_auc"
CV = "cv_auc"
#: The kinds of estimate (the `estimate` tag) and the tag holding each score, most honest first.
ESTIMATES = {"holdout": HOLDOUT, "corrected_cv": CORRECTED, "cv": CV}
METRIC_LABELS = {HOLDOUT: "holdout AUC", CORRECTED: "corrected AUC", CV: "cv_auc"}
#: The alias registration gives every new version; the chance guard does not apply to it.
CHALLENGER = "challenger"

VersionLike = Union["ModelVersion", Mapping[str, str]]  # a registered version, or its tags


def tags_of(version: VersionLike) -> Mapping[str, str]:
    """The version's tags (a mapping is taken to be the tags themselves)."""
    return version if isinstance(version, Mapping) else (version.tags or {})


def label(version: VersionLike) -> str:
    """`v3` for a registered version, `version` for a bare tag mapping."""
    return "version" if isinstance(version, Mapping) else f"v{version.version}"


def tag_float(version: VersionLike, key: str) -> float | None:
    """A numeric version tag, or None when absent, malformed or not finite."""
    try:
        value = float(tags_of(version)[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def estimate_kind(version: VersionLike) -> str | None:
    """The kind of score the gate compares: the `estimate` tag when its score is there, else the most honest
    score the version has (None: no score at all)."""
    kind = tags_of(version).get("estimate")
    if kind in ESTIMATES and tag_float(version, ESTIMATES[kind]) is not None:
        return kind
    return next((k for k, metric in ESTIMATES.items() if tag_float(version, metric) is not None), None)


def version_score(version: VersionLike) -> tuple[str, float]:
    """(metric, value) of the version's estimate kind, e.g. ("holdout_auc", 0.83); ValueError if it has none."""
    kind = estimate_kind(version)
    if kind is None:
        raise ValueError(f"{label(version)} has no holdout_auc, corrected_auc or cv_auc tag")
    metric = ESTIMATES[kind]
    return metric, float(tag_float(version, metric))  # type: ignore[arg-type]


def kind_label(kind: str | None) -> str:
    """`holdout AUC`, `corrected AUC`, `cv_auc` or `no score`."""
    return METRIC_LABELS[ESTIMATES[kind]] if kind else "no score"


def cohort_of(version: VersionLike) -> str | None:
    """The hash of the cohort the version was made on (None for a version without the tag)."""
    return tags_of(version).get("cohort_hash") or None


def like_with_like(holder: VersionLike, candidate: VersionLike, alias: str) -> str | None:
    """Why `candidate` cannot be compared with the current `alias` holder (None: same cohort, same estimate)."""
    h, c = label(holder), label(candidate)
    hc, cc = cohort_of(holder), cohort_of(candidate)
    if hc is None or cc is None or hc != cc:
        return (
            f"{c} was made on cohort {cc or 'unknown'} but current @{alias} {h} on cohort {hc or 'unknown'}: "
            "AUCs measured on different patients are not comparable"
        )
    hk, ck = estimate_kind(holder), estimate_kind(candidate)
    if hk != ck:
        return (
            f"{c} is scored on {kind_label(ck)} but current @{alias} {h} on {kind_label(hk)}: different kinds "
            "of estimate are not comparable (a best-of-N cv_auc is optimistic, a hold-out AUC is not)"
        )
    if hk is None:
        return f"neither {c} nor current @{alias} {h} has a holdout_auc, corrected_auc or cv_auc tag"
    return None


def compare(holder: VersionLike, candidate: VersionLike, alias: str) -> tuple[bool, str]:
    """(candidate may replace holder, the comparison in words): like with like, then not a lower score, unless
    the candidate was shown to beat chance and the holder was not."""
    why_not = like_with_like(holder, candidate, alias)
    if why_not:
        return False, why_not
    h, c = label(holder), label(candidate)
    metric, old = version_score(holder)
    new = version_score(candidate)[1]
    if beats_chance(holder) == "false" and beats_chance(candidate) == "true":  # e.g. a forced champion
        return True, (
            f"{c} was shown to beat chance and current @{alias} {h} was not ({METRIC_LABELS[metric]} "
            f"{new:.3f}, was {old:.3f})"
        )
    if new < old:
        return False, f"current @{alias} {h} has {METRIC_LABELS[metric]} {old:.3f} > candidate {c} {new:.3f}"
    return True, f"{METRIC_LABELS[metric]} {new:.3f} (was {h} {old:.3f})"


def beats_chance(version: VersionLike) -> str:
    """The version's `beats_chance` tag: "true", "false" or "unknown" (absent)."""
    value = str(tags_of(version).get("beats_chance", "unknown")).lower()
    return value if value in ("true", "false") else "unknown"


def _interval(version: VersionLike, metric: str, words: str) -> str | None:
    auc, low, high = (tag_float(version, k) for k in (metric, f"{metric}_ci_low", f"{metric}_ci_high"))
    if low is None or high is None or low > 0.5:
        return None
    return f"{words} {auc:.3f} (95% interval {low:.3f}-{high:.3f}) includes 0.5" if auc is not None else None


def chance_problem(version: VersionLike, alias: str) -> str | None:
    """Why `version` may not take `alias` (None: it may): tagged beats_chance=false, with the intervals that say so."""
    if alias == CHALLENGER or beats_chance(version) != "false":
        return None
    found = [
        _interval(version, CORRECTED, "its corrected AUC"),
        _interval(version, HOLDOUT, "its hold-out AUC"),
    ]
    why = " and ".join(f for f in found if f) or "it is tagged beats_chance=false"
    return (
        f"{label(version)} was not shown to beat chance: {why} (registered for inspection only; @{alias} is "
        "kept for models shown to beat chance)"
    )


def pool_for(versions: list[Any], reference: Any) -> list[Any]:
    """The versions comparable with `reference`: the same cohort and the same kind of estimate, scored."""
    cohort, kind = cohort_of(reference), estimate_kind(reference)
    return [v for v in versions if cohort_of(v) == cohort and estimate_kind(v) == kind and kind is not None]


def reference_for(versions: list[Any], holder: Any | None) -> Any:
    """What `--best` ranks against: the current holder, else the newest version's cohort with the most honest kind
    of estimate any version of that cohort has (so the first champion is chosen like with like too)."""
    if holder is not None:
        return holder
    newest = max(versions, key=lambda v: int(v.version))
    same = [v for v in versions if cohort_of(v) == cohort_of(newest) and estimate_kind(v) is not None]
    kinds = {estimate_kind(v) for v in same}
    best = next((k for k in ESTIMATES if k in kinds), None)
    return next((v for v in same if estimate_kind(v) == best), newest)
