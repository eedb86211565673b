"""Patient-grouped, stratified, seeded cross-validation folds, written once and reused."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split


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


def split_holdout(labels: dict[str, int], fraction: float, seed: int = 0) -> list[str]:
    """A stratified, patient-level held-out test set (sorted patient ids), never seen by any trial."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    patients = sorted(labels)
    y = [labels[p] for p in patients]
    _, test = train_test_split(patients, test_size=fraction, stratify=y, random_state=seed)
    return sorted(test)


def _load_or_write(path: Path, meta: dict[str, Any], key: str, make: Any) -> Any:
    """Reuse `path` if it was written with `meta`; else write `make()` there once. Mismatch is an error."""
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("meta") != meta:
            raise FoldsMismatchError(
                f"{path} was made with {stored.get('meta')}, not {meta}; delete it or use another folder"
            )
        return stored[key]
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, key: value}, indent=1))
    tmp.replace(path)
    return value


def _renamed(patients: list[str], rename: Mapping[str, str] | None) -> list[str]:
    return sorted(rename[p] for p in patients) if rename is not None else patients


def load_or_make_holdout(
    path: str | Path, labels: dict[str, int], fraction: float, seed: int = 0, cohort_hash: str = "",
    rename: Mapping[str, str] | None = None,
) -> list[str]:  # fmt: skip
    """The held-out patients of a study, drawn once and reused.

    With `rename` (patient id -> pseudonym) the split is drawn on the real ids, so it is the same split as
    without, but written and returned as pseudonyms.
    """
    meta = {"cohort_hash": cohort_hash, "fraction": fraction, "seed": seed, **_ids_meta(rename)}
    return _load_or_write(
        Path(path), meta, "patients", lambda: _renamed(split_holdout(labels, fraction, seed), rename)
    )


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
    meta: dict[str, Any] = {"cohort_hash": cohort_hash, "k": k, "seed": seed, "group_by": group_by,
                            **_ids_meta(rename)}  # fmt: skip

    def make() -> list[dict[str, list[str]]]:
        split = make_folds(labels, groups, k, seed)
        return [{part: _renamed(ids, rename) for part, ids in fold.items()} for fold in split]

    return _load_or_write(Path(path), meta, "folds", make)
