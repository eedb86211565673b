"""One scan under two patient ids: found from the decoded voxel data while the manifest is validated.

Copies of a scan filed under different patient ids land in different folds, so a model is tested on images
it trained on and every cv_auc is inflated; public imaging sets often hold such copies. Two checks:

* **exact**: a sha256 of each image's decoded voxels (float32, with the array's shape), so a copy found
  under another file name, format or compression is still the same scan; two patient ids sharing one is
  refused unless the user allows it;
* **near**: the Pearson correlation of 32 x 32 thumbnails (the volume averaged along its shortest axis, then
  area-averaged); >= 0.99 flags a re-encoded, rescaled or slightly edited copy (a PNG saved again as a
  JPEG at quality 75 correlates above 0.999), which is only warned about, since two patients' scans can
  look alike.

The fingerprints are taken in the validation's own read of every image (`load_manifest(on_image=...)`), so
the check costs a hash and a thumbnail per scan, not another read.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainers.manifest import Cohort, ManifestError, load_manifest

THUMBNAIL_PX = 32
NEAR_CORRELATION = 0.99


@dataclass(frozen=True)
class Fingerprint:
    """What the checks compare: the voxel hash and the unit-norm, zero-mean thumbnail."""

    digest: str
    thumbnail: np.ndarray


def _shrink(plane: np.ndarray, n: int) -> np.ndarray:
    """`plane` area-averaged into an n x n grid (nearest sampling along an axis shorter than n); sums by
    np.add.reduceat, not BLAS, whose threads stall on a busy machine."""
    for axis in (0, 1):
        size = plane.shape[axis]
        if size < n:
            plane = np.take(plane, np.minimum((np.arange(n) * size + size // 2) // n, size - 1), axis=axis)
            continue
        starts = -(-np.arange(n) * size // n)  # the first position of each cell: ceil(cell * size / n)
        counts = np.diff(np.append(starts, size)).astype(np.float64)
        plane = np.add.reduceat(plane, starts, axis=axis) / (
            counts[:, None] if axis == 0 else counts[None, :]
        )
    return plane


def fingerprint(array: np.ndarray) -> Fingerprint:
    """Hash and thumbnail of one image's decoded voxels (as `trainers.io.load_image` returns them)."""
    voxels = np.ascontiguousarray(array, dtype=np.float32)
    h = hashlib.sha256(repr(voxels.shape).encode())
    h.update(memoryview(voxels).cast("B"))
    plane = voxels.mean(axis=int(np.argmin(voxels.shape))) if voxels.ndim == 3 else voxels
    thumb = _shrink(np.nan_to_num(plane.astype(np.float64)), THUMBNAIL_PX).ravel()
    thumb = thumb - thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return Fingerprint(h.hexdigest(), (thumb / norm if norm > 0 else thumb).astype(np.float32))


@dataclass(frozen=True)
class DuplicateScans:
    """Scans shared by several patient ids: `exact` groups of (patient_id, image) and `near` pairs with their
    thumbnail correlation."""

    exact: list[list[tuple[str, Path]]] = field(default_factory=list)
    near: list[tuple[tuple[str, Path], tuple[str, Path], float]] = field(default_factory=list)


def find_duplicates(cohort: Cohort, prints: dict[Path, Fingerprint]) -> DuplicateScans:
    """Groups of identical scans held by more than one patient id, and near-identical pairs of scans of
    different patients (not already in one exact group)."""
    owners: dict[str, dict[Path, str]] = {}
    for scan in cohort.scans:
        owners.setdefault(prints[scan.image].digest, {})[scan.image] = scan.patient_id
    exact = [
        sorted((pid, path) for path, pid in group.items())
        for group in owners.values()
        if len(set(group.values())) > 1
    ]
    firsts = [(pid, path) for group in owners.values() for path, pid in list(group.items())[:1]]
    near = []
    if len(firsts) > 1:
        thumbs = np.stack([prints[path].thumbnail for _, path in firsts])
        corr = np.triu(thumbs @ thumbs.T, k=1)
        for i, j in zip(*np.nonzero(corr >= NEAR_CORRELATION), strict=True):
            if firsts[i][0] != firsts[j][0]:
                near.append((firsts[i], firsts[j], float(corr[i, j])))
    return DuplicateScans(sorted(exact), sorted(near, key=lambda n: -n[2]))


def load_checked(
    manifest: str | Path, folds: int = 5, cv_group: str = "patient"
) -> tuple[Cohort, DuplicateScans]:
    """`load_manifest` (raises ManifestError), with every image fingerprinted in the validation's own read."""
    prints: dict[Path, Fingerprint] = {}
    lock = threading.Lock()

    def seen(path: Path, array: np.ndarray) -> None:
        fp = fingerprint(array)
        with lock:
            prints[path] = fp

    cohort = load_manifest(manifest, folds=folds, cv_group=cv_group, on_image=seen)
    return cohort, find_duplicates(cohort, prints)


def _named(scan: tuple[str, Path], base: Path) -> str:
    pid, path = scan
    return f"{pid} ({os.path.relpath(path, base) if path.is_relative_to(base) else path})"


def duplicate_problems(found: DuplicateScans, base: Path, flag: str = "--allow-duplicate-scans") -> list[str]:
    """One message per group of patient ids sharing a scan, then what to do; [] when there is none."""
    if not found.exact:
        return []
    problems = [
        f"one scan (identical voxel data) under {len({p for p, _ in g})} patient ids: "
        + ", ".join(_named(s, base) for s in g)
        for g in found.exact
    ]
    n = len(found.exact)
    problems.append(
        f"{n} scan{'s are' if n > 1 else ' is'} shared by several patient ids: such copies land in different "
        f"folds and inflate every cv_auc; keep each scan under one patient id, or pass {flag} to search anyway"
    )
    return problems


def duplicate_warnings(found: DuplicateScans, base: Path, allowed: bool) -> list[str]:
    """Lines to print once: near-identical pairs, and the exact groups a user allowed."""
    lines = []
    if allowed and found.exact:
        groups = "; ".join(", ".join(_named(s, base) for s in g) for g in found.exact)
        lines.append(
            f"warning: searching with scans shared by several patient ids (--allow-duplicate-scans): "
            f"{groups}; cv_auc is optimistic by however much these copies leak across folds"
        )
    if found.near:
        pairs = "; ".join(f"{_named(a, base)} and {_named(b, base)} (r = {r:.3f})" for a, b, r in found.near)
        lines.append(
            f"warning: {len(found.near)} pair(s) of scans of different patients look nearly identical "
            f"({THUMBNAIL_PX} x {THUMBNAIL_PX} thumbnail correlation >= {NEAR_CORRELATION}; a re-encoded "
            f"or rescaled copy?): {pairs}. If one is a copy of the other, keep it under one patient "
            "id: a copy in another fold inflates cv_auc"
        )
    return lines


def checked_manifest(
    manifest: str | Path, folds: int = 5, cv_group: str = "patient", allow: bool = False
) -> Cohort:
    """`load_manifest` plus the duplicate check: one ManifestError listing every shared scan (with the other
    problems' format) unless `allow`; the warnings printed once on stderr."""
    cohort, found = load_checked(manifest, folds=folds, cv_group=cv_group)
    base = cohort.manifest.parent
    if not allow and (problems := duplicate_problems(found, base)):
        raise ManifestError(cohort.manifest, problems)
    for line in duplicate_warnings(found, base, allow):
        print(line, file=sys.stderr, flush=True)
    return cohort
