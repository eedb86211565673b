"""Patient-grouped, stratified, seeded cross-validation folds, written once and reused."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from trainers.atomic import write_text_atomic


class FoldsMismatchError(Exception):
    """An existing folds file was made for another cohort or other fold settings."""


def make_folds(
    labels: dict[str, int], groups: dict[str, str] | None = None, k: int = 5, seed: int = 0
) -> list[dict[str, list[str]]]:
    """Split patients into k folds, stratified by label and grouped (by patient, or by site)."""
    patients = list(labels)
    y = np.array([labels[p] for p in patients])
    g = np.array([(groups or {}).get(p, p) for p in patients])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for train_idx, val_idx in splitter.split(np.zeros(len(patients)), y, g):
        folds.append(
            {"train": sorted(patients[i] for i in train_idx), "val": sorted(patients[i] for i in val_idx)}
        )
    return folds


class HoldoutError(ValueError):
    """No held-out split satisfies the constraints (e.g. too few sites, or every choice leaves one class)."""


def split_holdout(
    labels: dict[str, int],
    fraction: float,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    min_groups_left: int = 1,
) -> list[str]:
    """A stratified held-out test set (sorted patient ids), never seen by any trial.

    Without `groups` it is drawn patient by patient. With `groups` (patient id -> site) it takes whole sites
    (`split_holdout_sites`), so a site-grouped search is tested on sites it never saw, as its CV claims.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    if groups is not None:
        return split_holdout_sites(labels, groups, fraction, seed, min_groups_left)
    patients = sorted(labels)
    y = [labels[p] for p in patients]
    _, test = train_test_split(patients, test_size=fraction, stratify=y, random_state=seed)
    return sorted(test)


EXHAUSTIVE_SITES = 14  # up to this many sites every subset is scored (2^14 subsets); beyond, a seeded search
SAMPLED_ORDERS = 4000  # site orders drawn (seeded) when there are more sites than that


def split_holdout_sites(
    labels: Mapping[str, int],
    sites: Mapping[str, str],
    fraction: float,
    seed: int = 0,
    min_sites_left: int = 1,
) -> list[str]:
    """The patients of the whole sites held out: the subset of sites nearest `fraction` of the patients and the
    cohort's prevalence (cost |size - fraction| + |prevalence - cohort prevalence|, exact ties broken by `seed`),
    among subsets that leave both classes on both sides and at least `min_sites_left` sites to search on.

    Raises HoldoutError naming the sites and their classes when no subset qualifies.
    """
    names = sorted({sites[p] for p in labels})
    counts = np.array(
        [[sum(1 for p in labels if sites[p] == s and labels[p] == c) for c in (0, 1)] for s in names]
    )
    listing = ", ".join(f"{s} (T1 {a}, T2 {b})" for s, (a, b) in zip(names, counts, strict=True))
    if len(names) < 1 + min_sites_left:
        raise HoldoutError(
            f"a hold-out of whole sites needs at least {1 + min_sites_left} sites (one to hold out, "
            f"{min_sites_left} left to search on), but the cohort has {len(names)}: {listing}"
        )
    rng = np.random.default_rng(seed)
    masks = _site_subsets(counts[:, 0] + counts[:, 1], fraction, rng)
    held, total = masks @ counts, counts.sum(axis=0)
    kept = total - held
    ok = (held > 0).all(axis=1) & (kept > 0).all(axis=1) & (len(names) - masks.sum(axis=1) >= min_sites_left)
    if not ok.any():
        raise HoldoutError(
            "no choice of whole sites leaves both classes (T1 and T2) in the held-out and in the search patients "
            f"with {min_sites_left} site(s) left to search on; sites: {listing}"
        )
    n_held = held.sum(axis=1)
    cost = np.abs(n_held / total.sum() - fraction) + np.abs(
        held[:, 1] / np.maximum(n_held, 1) - total[1] / total.sum()
    )
    cost = np.where(ok, np.round(cost, 9), np.inf)
    order = rng.permutation(len(masks))
    chosen = masks[order[np.argmin(cost[order])]]
    held_sites = {s for s, m in zip(names, chosen, strict=True) if m}
    return sorted(p for p in labels if sites[p] in held_sites)


def _site_subsets(sizes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Candidate subsets of sites as a 0/1 matrix (one row per subset): all of them for a few sites, else the
    prefixes of seeded random site orders around the target size."""
    n = len(sizes)
    if n <= EXHAUSTIVE_SITES:
        bits = (np.arange(1, 2**n - 1)[:, None] >> np.arange(n)) & 1
        return bits.astype(np.int64)
    rows = []
    target = fraction * sizes.sum()
    for _ in range(SAMPLED_ORDERS):
        perm = rng.permutation(n)
        k = int(np.searchsorted(np.cumsum(sizes[perm]), target))
        for stop in {max(1, k), min(k + 1, n - 1)}:
            row = np.zeros(n, dtype=np.int64)
            row[perm[:stop]] = 1
            rows.append(row)
    return np.unique(np.array(rows), axis=0)


def _load_or_write(path: Path, meta: dict[str, Any], key: str, make: Any) -> Any:
    """Reuse `path` if it was written with `meta`; else write the document `make()` returns (its `key` plus any
    keys that describe it) there once. Mismatch is an error. Returns the document's `key`."""
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("meta") != meta:
            raise FoldsMismatchError(
                f"{path} was made with {stored.get('meta')}, not {meta}; delete it or use another folder"
            )
        return stored[key]
    document = make()
    write_text_atomic(path, json.dumps({"meta": meta, **document}, indent=1))
    return document[key]


def _renamed(patients: list[str], rename: Mapping[str, str] | None) -> list[str]:
    return sorted(rename[p] for p in patients) if rename is not None else patients


def load_or_make_holdout(
    path: str | Path,
    labels: dict[str, int],
    fraction: float,
    seed: int = 0,
    cohort_hash: str = "",
    rename: Mapping[str, str] | None = None,
    sites: Mapping[str, str] | None = None,
    min_sites_left: int = 1,
) -> list[str]:
    """The held-out patients of a study, drawn once and reused.

    With `rename` (patient id -> pseudonym) the split is drawn on the real ids, so it is the same split as
    without, but written and returned as pseudonyms. With `sites` (patient id -> site, for a study grouped by
    site) it holds out whole sites (`split_holdout_sites`) and `holdout.json` names them under `sites`.
    """
    meta = {
        "cohort_hash": cohort_hash,
        "fraction": fraction,
        "seed": seed,
        **_ids_meta(rename),
        **({"group_by": "site"} if sites is not None else {}),
    }

    def make() -> dict[str, Any]:
        held = split_holdout(labels, fraction, seed, sites, min_sites_left)
        named = {"sites": sorted({sites[p] for p in held})} if sites is not None else {}
        return {"patients": _renamed(held, rename), **named}

    return _load_or_write(Path(path), meta, "patients", make)


def _ids_meta(rename: Mapping[str, str] | None) -> dict[str, str]:
    return {"ids": "pseudonyms"} if rename is not None else {}


def load_or_make_folds(
    path: str | Path,
    labels: dict[str, int],
    groups: dict[str, str] | None = None,
    k: int = 5,
    seed: int = 0,
    cohort_hash: str = "",
    group_by: str = "patient",
    rename: Mapping[str, str] | None = None,
) -> list[dict[str, list[str]]]:
    """Reuse `path` if it was made for this cohort and these settings, else write it; never silently redo.

    With `rename` (patient id -> pseudonym) the folds are made on the real ids (the same folds as without) and
    written and returned as pseudonyms.
    """
    meta: dict[str, Any] = {
        "cohort_hash": cohort_hash,
        "k": k,
        "seed": seed,
        "group_by": group_by,
        **_ids_meta(rename),
    }

    def make() -> dict[str, Any]:
        split = make_folds(labels, groups, k, seed)
        return {"folds": [{part: _renamed(ids, rename) for part, ids in fold.items()} for fold in split]}

    return _load_or_write(Path(path), meta, "folds", make)
