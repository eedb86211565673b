"""IBSI-defined lesion features from PyRadiomics (its maintained fork, `pyradiomics-bhklab`), measured on the
cached ROI and mask of every scan, once, and kept in the preprocessing cache.

What is measured (`EXTRACTION`, recorded with every radiomics trial and model that uses it): the slabs' centre
slices (z-scored intensities, as the cache holds them) with the tumour mask, resampled in-plane to the working
spacing of 0.8 mm (B-spline for the image, nearest neighbour for the mask: the ROI's own pixel size depends on
the lesion's extent), intensities discretised with a fixed bin width of 0.125 (64 bins over the z-scored range
-3..5: fixed bins, as IBSI recommends for normalised MRI), texture in 2D on each slice (`force2D`, the slices
lie 4 mm apart) and merged over the slices as PyRadiomics does: first-order statistics, GLCM, GLRLM, GLSZM,
GLDM and NGTDM of the lesion, and the 2D shape of its largest slice. The mask's volume at the working spacing
is added (`lesion_volume_mm3`), as the hand-made features have it. A scan whose mask is empty, or too small
for a texture matrix, gets NaN for what could not be measured (the radiomics model imputes it).

Feature names are PyRadiomics' own (`original_glcm_Contrast`, ...); PyRadiomics documents how each maps to the
IBSI reference definitions and where it deviates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from trainers.atomic import write_text_atomic
from trainers.cache import cache_root
from trainers.preprocess import LesionROI, ScanROI

IBSI_VERSION = 1  # bump when what is measured changes: cached features are then measured again
SPACING_MM = 0.8  # in-plane, the preprocessing's working spacing
SLICE_GAP_MM = 4.0  # between the slabs' centre slices (the working spacing's z)
TEXTURE = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
SETTINGS: dict[str, Any] = {
    "binWidth": 0.125,
    "force2D": True,
    "force2Ddimension": 0,
    "resampledPixelSpacing": [SPACING_MM, SPACING_MM, 0],
    "interpolator": "sitkBSpline",
    "padDistance": 5,
    "label": 1,
    "minimumROIDimensions": 2,
    "minimumROISize": 4,
    "voxelArrayShift": 0,
}
#: everything that decides the features: recorded beside them (trial, model) and part of their cache key
EXTRACTION: dict[str, Any] = {
    "library": "pyradiomics-bhklab",
    "settings": SETTINGS,
    "image_types": ["Original"],
    "texture_classes": list(TEXTURE),
    "shape": "shape2D of the largest slice",
    "version": IBSI_VERSION,
}
VOLUME = "lesion_volume_mm3"


def extraction() -> dict[str, Any]:
    """`EXTRACTION` with the library's installed version."""
    return {**EXTRACTION, "library_version": version("pyradiomics-bhklab")}


@cache
def _extractors() -> tuple[Any, Any]:
    """(texture extractor, 2D shape extractor), configured once per process; PyRadiomics' chatter silenced."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    texture = featureextractor.RadiomicsFeatureExtractor(**SETTINGS)
    texture.disableAllFeatures()
    texture.enableFeaturesByName(**{name: [] for name in TEXTURE})
    shape = featureextractor.RadiomicsFeatureExtractor(**{**SETTINGS, "resampledPixelSpacing": None})
    shape.disableAllFeatures()
    shape.enableFeaturesByName(shape2D=[])
    return texture, shape


def _image(planes: np.ndarray, pixel_mm: float) -> Any:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(planes))
    image.SetSpacing((float(pixel_mm), float(pixel_mm), SLICE_GAP_MM))
    return image


def _measured(extractor: Any, planes: np.ndarray, mask: np.ndarray, pixel_mm: float) -> dict[str, float]:
    """PyRadiomics' features of one image and mask ({} when the mask is too small to measure)."""
    try:
        out = extractor.execute(_image(planes, pixel_mm), _image(mask.astype(np.uint8), pixel_mm))
    except (ValueError, RuntimeError):  # an empty mask, or one too small after resampling
        return {}
    return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}


@cache
def feature_names() -> tuple[str, ...]:
    """The features' names, in column order (measured once on a synthetic disc, so they are PyRadiomics')."""
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 24) ** 2 + (xx - 24) ** 2 < 14**2
    planes = np.stack([np.where(disc, 1.0 + 0.1 * xx, 0.0)] * 2).astype(np.float32)
    mask = np.stack([disc, disc])
    texture, shape = _extractors()
    return (VOLUME, *_measured(shape, planes[:1], mask[:1], 0.8), *_measured(texture, planes, mask, 0.8))


def measure(roi: ScanROI, lesion: LesionROI) -> list[float]:
    """One scan's features in `feature_names()` order (NaN where the mask gives nothing to measure)."""
    planes = roi.slabs[:, 1].astype(np.float32)
    mask = lesion.mask.astype(bool)
    texture, shape = _extractors()
    values: dict[str, float] = {VOLUME: float(lesion.volume_mm3)}
    if mask.any():
        largest = int(np.argmax(mask.sum(axis=(1, 2))))
        values.update(
            _measured(shape, planes[largest : largest + 1], mask[largest : largest + 1], lesion.pixel_mm)
        )
        values.update(_measured(texture, planes, mask, lesion.pixel_mm))
    return [values.get(name, math.nan) for name in feature_names()]


def _cache_key(roi: ScanROI, lesion: LesionROI) -> str:
    """What a scan's features depend on: its cached ROI and mask, the extraction and the library's version."""
    digest = hashlib.sha256(json.dumps(extraction(), sort_keys=True).encode())
    for array in (roi.slabs[:, 1], lesion.mask):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(float(lesion.pixel_mm)).encode())
    return digest.hexdigest()[:24]


def cached_measure(roi: ScanROI, lesion: LesionROI, cache_dir: Path | None = None) -> list[float]:
    """`measure`, read from the cache when this scan was measured before with the same extraction."""
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "ibsi"
    path = folder / f"{_cache_key(roi, lesion)}.json"
    try:
        stored = json.loads(path.read_text())
        if stored["names"] == list(feature_names()):
            return [math.nan if v is None else float(v) for v in stored["values"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    values = measure(roi, lesion)
    folder.mkdir(parents=True, exist_ok=True)
    clean = [v if math.isfinite(v) else None for v in values]
    write_text_atomic(path, json.dumps({"names": list(feature_names()), "values": clean}))
    return values


def ibsi_table(
    rois: Sequence[ScanROI], lesions: Sequence[LesionROI], cache_dir: Path | None = None
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(feature names, patients, features (P, F), labels (P,)) of a cohort whose scans all have masks, from the
    feature cache (measured where missing); a patient's scans are averaged."""
    rows: dict[str, list[list[float]]] = {}
    labels: dict[str, int] = {}
    for roi, lesion in zip(rois, lesions, strict=True):
        if roi.patient_id != lesion.patient_id:
            raise ValueError(f"ROI of patient {roi.patient_id} paired with the mask of {lesion.patient_id}")
        if not lesion.has_mask:
            raise ValueError(f"IBSI lesion features need a mask: patient {roi.patient_id} has none")
        rows.setdefault(roi.patient_id, []).append(cached_measure(roi, lesion, cache_dir))
        labels[roi.patient_id] = roi.label
    patients = list(rows)
    with np.errstate(all="ignore"):
        x = np.asarray([np.nanmean(np.asarray(rows[p], np.float64), axis=0) for p in patients], np.float64)
    return (
        list(feature_names()),
        patients,
        x.reshape(len(patients), -1),
        np.asarray([labels[p] for p in patients]),
    )
