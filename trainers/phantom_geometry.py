"""Signed-distance geometry of the phantom's anatomy: frames, rotations, ellipsoids, shells and capsules on a grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    """Vector scaled to length one."""
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def frame(w: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """Orthonormal right-handed frame (columns u, v, w) with w along `w` and u nearest to `hint`."""
    w = unit(w)
    u = unit(hint - (hint @ w) * w)
    return np.stack([u, np.cross(w, u), w], axis=1)


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about `axis` by `angle` radians (Rodrigues)."""
    k = unit(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


class Grid:
    """Voxel grid described by an affine; gives coordinates of sub-boxes so shapes are evaluated locally."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, ...]):
        self.m, self.t, self.shape = affine[:3, :3], affine[:3, 3], tuple(shape)
        self.inv = np.linalg.inv(self.m)

    def box(self, centre: np.ndarray, radius: float) -> tuple[slice, ...] | None:
        """Index box holding the world sphere (centre, radius), or None when it misses the grid."""
        ijk = self.inv @ (np.asarray(centre) - self.t)
        half = min(radius, 1e5) * np.linalg.norm(self.inv, axis=1)
        lo = np.maximum(np.floor(ijk - half), 0).astype(int)
        hi = np.minimum(np.ceil(ijk + half) + 1, self.shape).astype(int)
        return None if np.any(lo >= hi) else tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))

    def coords(
        self, box: tuple[slice, ...], mat: np.ndarray | None = None, off: np.ndarray | None = None
    ) -> np.ndarray:
        """Float32 coordinates (3, *box shape) of the voxel centres in `box`: world, or mat @ world + off."""
        mat, off = (np.eye(3), np.zeros(3)) if mat is None else (mat, off)
        lin, shift = mat @ self.m, mat @ self.t + off
        i, j, k = (np.arange(s.start, s.stop, dtype=np.float32) for s in box)
        p = np.empty((3, len(i), len(j), len(k)), np.float32)
        for r in range(3):
            m = lin[r].astype(np.float32)
            p[r] = (m[0] * i + np.float32(shift[r]))[:, None, None] + (m[1] * j)[:, None] + m[2] * k
        return p


class Points:
    """Voxel centres of one box; world coordinates are computed once, on first use."""

    def __init__(self, grid: Grid, box: tuple[slice, ...]):
        self.grid, self.box, self._p = grid, box, None

    @property
    def p(self) -> np.ndarray:
        """World coordinates (3, *box shape)."""
        if self._p is None:
            self._p = self.grid.coords(self.box)
        return self._p


def sd_ellipsoid(pts: Points, c: np.ndarray, frame: np.ndarray, axes: tuple[float, ...]) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid; a huge third axis gives an elliptic cylinder."""
    ax = np.asarray(axes, float)
    mat = frame.T / ax[:, None]
    q = pts.grid.coords(pts.box, mat, -mat @ c)  # ellipsoid coordinates straight from voxel indices
    rho = np.sqrt((q * q).sum(0))
    q /= ax.astype(np.float32).reshape(3, 1, 1, 1)
    return (rho - 1) * rho / np.maximum(np.sqrt((q * q).sum(0)), 1e-6)


def sd_capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (mm) to the capsule of radius r around segment a-b."""
    a32, ab = np.asarray(a, np.float32).reshape(3, 1, 1, 1), np.asarray(b - a, np.float32).reshape(3, 1, 1, 1)
    t = np.clip(((p - a32) * ab).sum(0) / max(float((ab * ab).sum()), 1e-6), 0, 1)
    return np.sqrt(((p - a32 - t * ab) ** 2).sum(0)) - r


Shape = tuple[Callable[[Points], np.ndarray], np.ndarray, float, object]  # sdf, centre, reach, signal


def ell(c: np.ndarray, frame: np.ndarray, axes: tuple[float, ...], value: float) -> Shape:
    """Ellipsoid painted with a constant signal."""
    return (lambda q: sd_ellipsoid(q, c, frame, axes)), c, float(max(axes)), value


def shell(c: np.ndarray, frame: np.ndarray, axes: tuple, inner: tuple, wall: float, fill: float) -> list:
    """Walled ellipsoid: outer wall signal then inner content signal."""
    return [ell(c, frame, axes, wall), ell(c, frame, inner, fill)]
