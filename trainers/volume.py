"""What every image reader returns: a float32 (X, Y, Z) volume with its RAS+ affine, or an ImageReadError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ImageReadError(Exception):
    """An image could not be read as a 3D volume; carries the path and a short human-readable reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{reason}: {path}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class Volume:
    """A 3D image as float32 voxels (X, Y, Z) plus its 4x4 voxel-to-world (RAS+ mm) affine."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along X, Y, Z (column norms of the affine), e.g. for resampling."""
        norms = np.linalg.norm(np.asarray(self.affine, dtype=float)[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))


def short_reason(exc: BaseException) -> str:
    """One-line, length-capped description of an exception for user-facing messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def shape_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Map a stored shape to (X, Y, Z): add Z for 2D, drop trailing singleton dims, reject true 4D+."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3:
        raise ImageReadError(path, f"{len(dims)}D image (shape {tuple(shape)}) where a 3D volume is expected")
    return (dims[0], dims[1], dims[2])


def source_files(path: str | Path) -> list[Path]:
    """List the files load_image reads for a path: the file itself, or a series folder's non-hidden files."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
