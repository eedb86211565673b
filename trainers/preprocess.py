"""Scan -> ROI slices: orient, resample, normalise, crop around the tumour, pick slices; cached on disk.

Without a tumour mask the crop is a square around the scan's foreground (the body outline, found with an
Otsu threshold) plus the margin, so a tumour anywhere in the body stays in the ROI whatever the field of view
or pixel spacing (a PNG/JPEG has none and is read at 1 mm per pixel).

Each scan is read once per set of preprocessing parameters: the result is stored under a key made of the
file paths, sizes and mtimes and the parameters, so a search reads every scan once, not once per trial.
Resolution is not part of the key: trials resize the cached ROI arrays in memory. Beside the slabs a cache
entry holds the mask cropped the same way (`LesionROI`), which the non-deep baseline measures; trials get the
slabs only.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.atomic import atomic_path
from trainers.cache import cache_root
from trainers.io import load_image
from trainers.manifest import Cohort, Scan

PREPROCESS_VERSION = (
    2  # 2: cache entries hold the mask's ROI too; a scan without a mask is cropped to its foreground
)


@dataclass(frozen=True)
class PreprocessParams:
    """How a scan becomes ROI slices; part of the cache key."""

    spacing: tuple[float, float, float] = (0.8, 0.8, 4.0)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    margin_mm: float = 15.0
    no_mask_fov_mm: float = (
        80.0  # a scan without mask or foreground (a featureless image): this centred field
    )
    slices: int = 3
    roi_px: int = 256

    def key(self) -> str:
        """Stable text of the parameters for hashing."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessParams:
        """The parameters as a saved model recorded them (`asdict`, lists for tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class ScanROI:
    """Cached output for one scan: `slabs` is (k, 3, roi_px, roi_px) float16 (neighbour, centre, neighbour)."""

    patient_id: str
    label: int
    slabs: np.ndarray
    tumour_area: np.ndarray


@dataclass
class LesionROI:
    """The mask of one scan's cache entry, cropped and resized like its slabs: what hand-made lesion features
    measure. Without a mask, `mask` is all False and `has_mask` False."""

    patient_id: str
    mask: np.ndarray  # (k, roi_px, roi_px) bool: the lesion on each slab's centre slice
    pixel_mm: float  # in-plane size of one ROI pixel (the crop box's width in mm / roi_px)
    volume_mm3: float  # the whole mask's volume at the working spacing (a 2D image: its area in mm^2)
    has_mask: bool


def _file_stamp(path: Path | None) -> list:
    if path is None:
        return [None]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [str(path)] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def scan_key(scan: Scan, params: PreprocessParams) -> str:
    """Cache key of one scan: its files' identity (path, size, mtime) and the preprocessing parameters."""
    text = json.dumps(
        [PREPROCESS_VERSION, _file_stamp(scan.image), _file_stamp(scan.mask), params.key()], default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _to_ras(array: np.ndarray, affine: np.ndarray, spacing: Sequence[float], mode: str) -> np.ndarray:
    """Orient to RAS and resample to `spacing` with MONAI; returns (X, Y, Z)."""
    # MONAI is imported here, not with the module: a trial worker imports this module (the ROI types) but never
    # preprocesses, and importing MONAI costs a process about 260 MB of resident memory and seconds
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    img = MetaTensor(torch.as_tensor(array[None], dtype=torch.float32), affine=torch.as_tensor(affine))
    img = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img)
    if array.shape[2] == 1:  # a 2D image: resample in-plane only
        spacing = (spacing[0], spacing[1], float(np.linalg.norm(np.asarray(affine)[:3, 2])) or 1.0)
    img = Spacing(pixdim=tuple(spacing), mode=mode, padding_mode="border")(img)
    return np.asarray(img.array[0] if hasattr(img, "array") else img[0], dtype=np.float32)


def _normalise(vol: np.ndarray, lo_hi: tuple[float, float]) -> np.ndarray:
    """Robust intensity normalisation: percentile clip, then z-score over the clipped volume."""
    body = vol[vol > np.percentile(vol, 5)] if np.any(vol) else vol
    lo, hi = np.percentile(body, lo_hi)
    vol = np.clip(vol, lo, hi)
    ref = np.clip(body, lo, hi)
    return ((vol - ref.mean()) / (ref.std() + 1e-6)).astype(np.float32)


def foreground(planes: np.ndarray) -> np.ndarray:
    """In-plane mask of the scan's foreground (the body outline) over `planes` (X, Y, k): pixels above an
    Otsu threshold in any plane, keeping connected parts at least 5% the size of the largest, so stray bright
    noise or an artefact off the body does not stretch the crop. All False for a featureless image."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if not np.isfinite(planes).all() or float(planes.max()) <= float(planes.min()):
        return np.zeros(planes.shape[:2], bool)
    above = (planes > threshold_otsu(planes)).any(axis=2)
    parts, n = ndimage.label(above)
    if n <= 1:
        return above
    sizes = np.bincount(parts.ravel())[1:]
    return np.isin(parts, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))


def _square_box(mask2d: np.ndarray | None, shape: tuple[int, int], margin_px: float, fov_px: float):
    """Square crop box (x0, x1, y0, y1) around the mask's in-plane extent plus margin (a mask of the tumour,
    or else of the scan's foreground), or centred when the mask is empty."""
    if mask2d is not None and mask2d.any():
        xs, ys = np.nonzero(mask2d)
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        half = max(xs.max() - xs.min(), ys.max() - ys.min()) / 2 + margin_px
    else:
        cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
        half = fov_px / 2
    half = max(half, 4.0)
    return int(round(cx - half)), int(round(cx + half)) + 1, int(round(cy - half)), int(round(cy + half)) + 1


def _crop(plane: np.ndarray, box, mode: str = "edge") -> np.ndarray:
    """Crop with padding (`mode` of np.pad: the edge for images, zeros for masks) where the box leaves the
    image."""
    x0, x1, y0, y1 = box
    pad = max(0, -x0, -y0, x1 - plane.shape[0], y1 - plane.shape[1])
    if pad:
        plane = np.pad(plane, pad, mode=mode)
    return plane[x0 + pad : x1 + pad, y0 + pad : y1 + pad]


def _resize(stack: np.ndarray, size: int) -> np.ndarray:
    t = torch.as_tensor(stack, dtype=torch.float32)[None]
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
    return out[0].numpy()


def preprocess_scan(scan: Scan, params: PreprocessParams) -> ScanROI:
    """Read one scan and turn it into k ROI slabs of 3 neighbouring slices each."""
    return preprocess_lesion(scan, params)[0]


def preprocess_lesion(scan: Scan, params: PreprocessParams) -> tuple[ScanROI, LesionROI]:
    """One scan's ROI slabs and, cropped and resized the same way, its mask on each slab's centre slice."""
    vol = load_image(scan.image)
    image = _to_ras(vol.array, vol.affine, params.spacing, "bilinear")
    mask = None
    if scan.mask is not None:
        m = load_image(scan.mask)
        mask = _to_ras(m.array, m.affine, params.spacing, "nearest") > 0.5
    image = _normalise(image, params.clip_percentiles)
    nz = image.shape[2]
    area = mask.sum(axis=(0, 1)).astype(np.float32) if mask is not None else np.zeros(nz, np.float32)
    if area.any():
        order = np.argsort(-area, kind="stable")
        chosen = sorted(int(z) for z in order[: min(params.slices, int((area > 0).sum()))])
    else:
        mid = nz // 2
        chosen = [z for z in range(mid - params.slices // 2, mid - params.slices // 2 + params.slices)]
        chosen = sorted({min(max(z, 0), nz - 1) for z in chosen})
    region = mask.any(axis=2) if mask is not None and mask.any() else None
    if region is None:  # no tumour mask: the body outline in the slices cropped (a fixed field cut tumours)
        region = foreground(
            image[:, :, sorted({min(max(zz, 0), nz - 1) for z in chosen for zz in (z - 1, z, z + 1)})]
        )
    box = _square_box(
        region,
        image.shape[:2],
        params.margin_mm / params.spacing[0],
        params.no_mask_fov_mm / params.spacing[0],
    )
    slabs = []
    for z in chosen:
        planes = [_crop(image[:, :, min(max(zz, 0), nz - 1)], box) for zz in (z - 1, z, z + 1)]
        slabs.append(_resize(np.stack(planes), params.roi_px))
    roi = ScanROI(scan.patient_id, scan.label, np.stack(slabs).astype(np.float16), area[chosen])
    return roi, _lesion(scan, mask, chosen, box, params)


def _lesion(
    scan: Scan, mask: np.ndarray | None, chosen: list[int], box, params: PreprocessParams
) -> LesionROI:
    """The mask's ROI: each chosen slice cropped with the slabs' box and resized like them (then thresholded)."""
    pixel_mm = (box[1] - box[0]) * params.spacing[0] / params.roi_px
    if mask is None:
        empty = np.zeros((len(chosen), params.roi_px, params.roi_px), bool)
        return LesionROI(scan.patient_id, empty, pixel_mm, 0.0, False)
    planes = np.stack([_crop(mask[:, :, z].astype(np.float32), box, "constant") for z in chosen])
    voxel = params.spacing[0] * params.spacing[1] * (params.spacing[2] if mask.shape[2] > 1 else 1.0)
    return LesionROI(
        scan.patient_id, _resize(planes, params.roi_px) > 0.5, pixel_mm, float(mask.sum() * voxel), True
    )


def read_cached_roi(path: Path, scan: Scan) -> ScanROI | None:
    """One scan's cache entry, or None when it is missing or cannot be read (truncated or damaged file, wrong
    shape): the caller then preprocesses the scan again and overwrites the entry."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            slabs, area = z["slabs"], z["tumour_area"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    if slabs.ndim != 4 or slabs.shape[1] != 3 or slabs.shape[2] != slabs.shape[3] or len(area) != len(slabs):
        return None
    return ScanROI(scan.patient_id, scan.label, slabs, area)


def read_cached_lesion(path: Path, scan: Scan) -> LesionROI | None:
    """The mask's ROI of one scan's cache entry, or None when it is missing, incomplete or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:  # the slabs are not read: the mask's own entries say its shape
            packed, px, area = z["lesion_mask"], int(z["lesion_px"]), z["tumour_area"]
            pixel_mm, volume, has_mask = float(z["pixel_mm"]), float(z["volume_mm3"]), bool(z["has_mask"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    if packed.ndim != 3 or len(packed) != len(area) or packed.shape[1] != px or packed.shape[2] * 8 < px:
        return None
    mask = np.unpackbits(packed, axis=-1, count=px).astype(bool)
    return LesionROI(scan.patient_id, mask, pixel_mm, volume, has_mask)


def _store(path: Path, roi: ScanROI, lesion: LesionROI) -> None:
    """Write one scan's cache entry atomically (the mask packed to bits: an eighth of a byte per pixel)."""
    with atomic_path(path, suffix=".npz", unique=True) as tmp:
        np.savez(
            tmp,
            slabs=roi.slabs,
            tumour_area=roi.tumour_area,
            lesion_mask=np.packbits(lesion.mask, axis=-1),
            lesion_px=lesion.mask.shape[-1],
            pixel_mm=lesion.pixel_mm,
            volume_mm3=lesion.volume_mm3,
            has_mask=lesion.has_mask,
        )


def load_rois(
    cohort: Cohort,
    params: PreprocessParams | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> list[ScanROI]:
    """ROI slabs for every scan of the cohort, from the cache where present and readable, else computed and
    stored (an unreadable entry is said so on stderr and replaced)."""
    return _load(cohort, params, cache_dir, progress, lesions=False)


def load_lesions(
    cohort: Cohort,
    params: PreprocessParams | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> list[LesionROI]:
    """The mask's ROI for every scan of the cohort (in `load_rois`' order), from the same cache entries."""
    return _load(cohort, params, cache_dir, progress, lesions=True)


def _load(
    cohort: Cohort,
    params: PreprocessParams | None,
    cache_dir: str | Path | None,
    progress: bool,
    lesions: bool,
) -> list:
    params = params or PreprocessParams()
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "preprocessed"
    cache.mkdir(parents=True, exist_ok=True)
    read = read_cached_lesion if lesions else read_cached_roi
    out: list = []
    misses = 0
    for i, scan in enumerate(cohort.scans):
        path = cache / f"{scan_key(scan, params)}.npz"
        cached = read(path, scan)
        if cached is not None:
            out.append(cached)
            continue
        if path.exists():
            print(
                f"cache entry {path.name} of patient {scan.patient_id} is unreadable: preprocessing the scan again",
                file=sys.stderr,
                flush=True,
            )
        roi, lesion = preprocess_lesion(scan, params)
        _store(path, roi, lesion)
        out.append(lesion if lesions else roi)
        misses += 1
        if progress and (misses == 1 or (i + 1) % 16 == 0 or i + 1 == len(cohort.scans)):
            print(f"preprocessing scans: {i + 1}/{len(cohort.scans)}", file=sys.stderr, flush=True)
    return out
