"""Patient-grouped, stratified, seeded cross-validation folds, written once and reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


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


def load_or_make_folds(
    path: str | Path,
    labels: dict[str, int],
    groups: dict[str, str] | None = None,
    k: int = 5,
    seed: int = 0,
    cohort_hash: str = "",
    group_by: str = "patient",
) -> list[dict[str, list[str]]]:
    """Reuse `path` if it was made for this cohort and these settings, else write it; never silently redo."""
    path = Path(path)
    meta: dict[str, Any] = {"cohort_hash": cohort_hash, "k": k, "seed": seed, "group_by": group_by}
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("meta") != meta:
            raise FoldsMismatchError(
                f"{path} was made with {stored.get('meta')}, not {meta}; delete it or use another folder"
            )
        return stored["folds"]
    folds = make_folds(labels, groups, k, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "folds": folds}, indent=1))
    tmp.replace(path)
    return folds
