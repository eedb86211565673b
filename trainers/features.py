"""Hand-made lesion features from the cached ROI: size, shape, intensity statistics and GLCM texture.

They feed the non-deep baseline (a regularised logistic regression scored on the study's folds), which tells a
user whether the deep search beats a simple radiomics-style model. With a mask on every scan: the lesion's
size (volume, largest slice area), shape on its largest slice (scikit-image regionprops), intensity statistics
inside it and GLCM texture of it (pixel pairs with both ends in the lesion). Without masks (or when some scans
lack one) only the intensity and texture of the whole ROI, for every scan alike.

Intensities are those of the cache: each volume was percentile-clipped and z-scored, so one fixed grey-level
range serves every scan (fixed bins, as IBSI recommends for normalised MRI). The GLCM offset is a fixed
physical distance, not a pixel count, because the ROI's pixel size depends on the lesion's extent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import label, regionprops

from trainers.preprocess import LesionROI, ScanROI

GLCM_RANGE = (-3.0, 5.0)  # z-scored intensities binned over this range (values outside go to the end bins)
GLCM_LEVELS = 64
GLCM_STEP_MM = 1.0  # pixel-pair offset of the GLCM, in mm
GLCM_ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)  # averaged: rotation-invariant texture
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")

SIZE = ("lesion_volume_mm3", "lesion_area_mm2")
SHAPE = (
    "shape_eccentricity",
    "shape_solidity",
    "shape_extent",
    "shape_perimeter_ratio",
    "shape_major_axis_mm",
    "shape_minor_axis_mm",
)
STATS = ("mean", "sd", "p10", "p50", "p90", "skewness", "kurtosis")


def feature_names(masks: bool) -> list[str]:
    """Names of the features, in column order: lesion features with masks, ROI features without."""
    if masks:
        return [
            *SIZE,
            *SHAPE,
            *(f"lesion_{s}" for s in STATS),
            "lesion_minus_surround",
            *(f"lesion_glcm_{p}" for p in GLCM_PROPS),
        ]
    return [*(f"roi_{s}" for s in STATS), *(f"roi_glcm_{p}" for p in GLCM_PROPS)]


def intensity_stats(values: np.ndarray) -> list[float]:
    """Mean, sd, 10th/50th/90th percentiles, skewness and excess kurtosis (NaN for an empty region)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return [math.nan] * len(STATS)
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    flat = v.std() < 1e-9  # skewness and kurtosis are undefined for a constant region
    skew = 0.0 if flat else float(stats.skew(v))
    kurt = 0.0 if flat else float(stats.kurtosis(v))
    return [float(v.mean()), float(v.std()), float(p10), float(p50), float(p90), skew, kurt]


def quantise(image: np.ndarray) -> np.ndarray:
    """Grey levels 1..GLCM_LEVELS over the fixed range (0 is kept for "outside the region")."""
    lo, hi = GLCM_RANGE
    q = np.floor((np.asarray(image, np.float64) - lo) / (hi - lo) * GLCM_LEVELS)
    return (np.clip(q, 0, GLCM_LEVELS - 1) + 1).astype(np.uint8)


def glcm_texture(planes: np.ndarray, masks: np.ndarray, pixel_mm: float) -> list[float]:
    """GLCM contrast, homogeneity, energy and correlation of the masked pixels, co-occurrences pooled over the
    planes and averaged over four directions; pairs with an end outside the mask are left out."""
    step = max(1, int(round(GLCM_STEP_MM / pixel_mm)))
    counts = np.zeros((GLCM_LEVELS + 1, GLCM_LEVELS + 1, 1, len(GLCM_ANGLES)), np.float64)
    for plane, mask in zip(planes, masks, strict=True):
        if not mask.any():
            continue
        xs, ys = np.nonzero(mask)
        box = (slice(xs.min(), xs.max() + 1), slice(ys.min(), ys.max() + 1))
        q = np.where(mask, quantise(plane), 0)[box]
        counts += graycomatrix(q, [step], list(GLCM_ANGLES), levels=GLCM_LEVELS + 1, symmetric=True)
    counts = counts[1:, 1:]  # drop level 0: pairs touching the outside
    if counts.sum() == 0:
        return [math.nan] * len(GLCM_PROPS)
    out = []
    for prop in GLCM_PROPS:
        values = graycoprops(counts, prop).ravel()
        out.append(float(np.nanmean(values)) if np.isfinite(values).any() else math.nan)
    return out


def shape_features(mask: np.ndarray, pixel_mm: float) -> list[float]:
    """Eccentricity, solidity, extent, perimeter ratio (perimeter / that of a circle of equal area; 1 for a
    disc) and axis lengths in mm of the largest connected lesion region in a 2D mask (NaN when empty)."""
    regions = regionprops(label(mask))
    if not regions:
        return [math.nan] * len(SHAPE)
    r = max(regions, key=lambda reg: reg.area)
    ratio = r.perimeter / (2 * math.sqrt(math.pi * r.area)) if r.area else math.nan
    return [
        float(r.eccentricity),
        float(r.solidity),
        float(r.extent),
        float(ratio),
        float(r.axis_major_length * pixel_mm),
        float(r.axis_minor_length * pixel_mm),
    ]


def scan_features(roi: ScanROI, lesion: LesionROI, masks: bool) -> list[float]:
    """One scan's features in `feature_names(masks)` order, measured on each slab's centre slice."""
    planes = roi.slabs[:, 1].astype(np.float32)
    if not masks:
        everywhere = np.ones(planes.shape, bool)
        return intensity_stats(planes) + glcm_texture(planes, everywhere, lesion.pixel_mm)
    m = lesion.mask
    areas = m.sum(axis=(1, 2))
    largest = m[int(np.argmax(areas))]
    inside, outside = planes[m], planes[~m]
    contrast = float(inside.mean() - outside.mean()) if inside.size and outside.size else math.nan
    size = [lesion.volume_mm3, float(areas.max() * lesion.pixel_mm**2)]
    return (
        size
        + shape_features(largest, lesion.pixel_mm)
        + intensity_stats(inside)
        + [contrast]
        + glcm_texture(planes, m, lesion.pixel_mm)
    )


def feature_table(
    rois: Sequence[ScanROI], lesions: Sequence[LesionROI]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, bool]:
    """(feature names, patients, features (P, F), labels (P,), masks) for a cohort's cached ROIs: lesion
    features when every scan has a mask, else ROI features; a patient's scans are averaged. Undefined values
    (an empty mask) are NaN, for the model to impute."""
    masks = bool(lesions) and all(les.has_mask for les in lesions)
    rows: dict[str, list[list[float]]] = {}
    labels: dict[str, int] = {}
    for roi, lesion in zip(rois, lesions, strict=True):
        if roi.patient_id != lesion.patient_id:
            raise ValueError(f"ROI of patient {roi.patient_id} paired with the mask of {lesion.patient_id}")
        rows.setdefault(roi.patient_id, []).append(scan_features(roi, lesion, masks))
        labels[roi.patient_id] = roi.label
    patients = list(rows)
    x = np.asarray(
        [
            np.nanmean(np.asarray(rows[p], np.float64), axis=0) if len(rows[p]) > 1 else rows[p][0]
            for p in patients
        ],
        np.float64,
    )
    return (
        feature_names(masks),
        patients,
        x.reshape(len(patients), -1),
        np.asarray([labels[p] for p in patients]),
        masks,
    )
