"""Hand-made lesion features: size scales with the lesion, texture tells smooth from noisy, the cache holds the
mask's ROI beside the slabs."""

from __future__ import annotations

import numpy as np
import pytest

import trainers.preprocess as pre
from trainers.features import feature_names, feature_table, glcm_texture, scan_features
from trainers.manifest import load_manifest

R = 128


def disc(radius: float, centre: tuple[float, float] = (64, 64), stretch: float = 1.0) -> np.ndarray:
    x, y = np.meshgrid(np.arange(R), np.arange(R), indexing="ij")
    return ((x - centre[0]) / stretch) ** 2 + (y - centre[1]) ** 2 <= radius**2


def scan(mask2d: np.ndarray, image2d: np.ndarray | None = None, pixel_mm: float = 0.5, pid: str = "P1"):
    """A one-slab ScanROI and LesionROI with `mask2d` on its centre slice."""
    image = np.zeros((R, R), np.float32) if image2d is None else image2d
    slabs = np.repeat(image[None, None], 3, axis=1).astype(np.float16)
    roi = pre.ScanROI(pid, 1, slabs, np.asarray([float(mask2d.sum())]))
    volume = float(mask2d.sum() * pixel_mm**2 * 4.0)
    return roi, pre.LesionROI(pid, mask2d[None], pixel_mm, volume, True)


def named(roi, lesion, masks: bool = True) -> dict[str, float]:
    return dict(zip(feature_names(masks), scan_features(roi, lesion, masks), strict=True))


def test_size_scales_with_the_lesion_and_the_pixel_size() -> None:
    small, big = named(*scan(disc(12))), named(*scan(disc(24)))
    assert big["lesion_area_mm2"] / small["lesion_area_mm2"] == pytest.approx(4.0, rel=0.05)
    assert big["lesion_volume_mm3"] / small["lesion_volume_mm3"] == pytest.approx(4.0, rel=0.05)
    assert big["shape_major_axis_mm"] / small["shape_major_axis_mm"] == pytest.approx(2.0, rel=0.05)
    coarse = named(*scan(disc(12), pixel_mm=1.0))  # the same pixels, each twice as wide
    assert coarse["lesion_area_mm2"] / small["lesion_area_mm2"] == pytest.approx(4.0, rel=1e-6)
    assert small["lesion_area_mm2"] == pytest.approx(np.pi * 12**2 * 0.25, rel=0.05)


def test_shape_tells_a_disc_from_an_ellipse_and_a_ragged_outline() -> None:
    round_, long_ = named(*scan(disc(16))), named(*scan(disc(16, stretch=2.5)))
    assert round_["shape_eccentricity"] < 0.2 < 0.85 < long_["shape_eccentricity"]
    assert round_["shape_solidity"] > 0.95 and round_["shape_perimeter_ratio"] < 1.1
    x, y = np.meshgrid(np.arange(R) - 64.0, np.arange(R) - 64.0, indexing="ij")
    lobes = np.hypot(x, y) <= 24 + 8 * np.cos(8 * np.arctan2(y, x))  # a lobulated outline, 8 lobes
    ragged = named(*scan(lobes))
    assert ragged["shape_perimeter_ratio"] > round_["shape_perimeter_ratio"] + 0.2
    assert ragged["shape_solidity"] < round_["shape_solidity"] - 0.1


def test_texture_tells_a_smooth_lesion_from_a_noisy_one() -> None:
    rng = np.random.default_rng(0)
    x, _ = np.meshgrid(np.linspace(-1, 1, R), np.linspace(-1, 1, R), indexing="ij")
    smooth = (0.5 * x).astype(np.float32)
    noisy = (smooth + rng.normal(0, 1.0, (R, R))).astype(np.float32)
    mask = disc(30)
    a, b = named(*scan(mask, smooth)), named(*scan(mask, noisy))
    assert b["lesion_glcm_contrast"] > 20 * a["lesion_glcm_contrast"]
    assert b["lesion_glcm_homogeneity"] < a["lesion_glcm_homogeneity"] - 0.3
    assert b["lesion_glcm_energy"] < a["lesion_glcm_energy"]
    assert a["lesion_glcm_correlation"] > 0.9 > 0.3 > b["lesion_glcm_correlation"]
    assert b["lesion_sd"] > 5 * a["lesion_sd"] and a["lesion_mean"] == pytest.approx(
        b["lesion_mean"], abs=0.1
    )


def test_texture_ignores_what_lies_outside_the_mask() -> None:
    """Noise outside the lesion changes no lesion texture value (pairs with an end outside are dropped)."""
    rng = np.random.default_rng(1)
    mask = disc(20)
    calm = np.where(mask, 0.3, 0.0).astype(np.float32)[None]
    loud = np.where(mask, 0.3, rng.normal(0, 2, (R, R))).astype(np.float32)[None]
    assert glcm_texture(calm, mask[None], 0.5) == glcm_texture(loud, mask[None], 0.5)


def test_without_masks_only_roi_intensity_and_texture() -> None:
    rng = np.random.default_rng(2)
    roi_a, les_a = scan(disc(10), rng.normal(0, 1, (R, R)).astype(np.float32), pid="A")
    roi_b, les_b = scan(disc(10), np.zeros((R, R), np.float32), pid="B")
    les_b = pre.LesionROI("B", np.zeros_like(les_b.mask), les_b.pixel_mm, 0.0, False)  # B has no mask
    names, patients, x, labels, masks = feature_table([roi_a, roi_b], [les_a, les_b])
    assert not masks and patients == ["A", "B"] and x.shape == (2, len(names))
    assert names == feature_names(False) and all(n.startswith("roi_") for n in names)
    assert not any("shape" in n or "volume" in n for n in names)
    assert x[0, names.index("roi_glcm_contrast")] > x[1, names.index("roi_glcm_contrast")]
    names, _, x, _, masks = feature_table([roi_a], [les_a])
    assert masks and "lesion_volume_mm3" in names and np.isfinite(x).all()


def test_cache_holds_the_mask_roi_beside_the_slabs(tiny_cohort, tmp_path, monkeypatch) -> None:
    """The mask's ROI comes from the same cache entries without reading a scan again, and it is the tumour
    the slabs were chosen on: its area matches the tumour area of each chosen slice."""
    cohort = load_manifest(tiny_cohort, folds=2)
    params = pre.PreprocessParams(roi_px=64, slices=2)
    rois = pre.load_rois(cohort, params, cache_dir=tmp_path, progress=False)
    first = tmp_path / f"{pre.scan_key(cohort.scans[0], params)}.npz"
    np.savez(first, slabs=rois[0].slabs, tumour_area=rois[0].tumour_area)  # an entry without the mask's ROI
    assert pre.read_cached_lesion(first, cohort.scans[0]) is None
    pre.load_lesions(cohort, params, cache_dir=tmp_path, progress=False)  # preprocesses that scan again
    monkeypatch.setattr(pre, "load_image", lambda p: pytest.fail(f"read {p} again"))
    lesions = pre.load_lesions(cohort, params, cache_dir=tmp_path, progress=False)
    assert [les.patient_id for les in lesions] == [r.patient_id for r in rois]
    for roi, les in zip(rois, lesions, strict=True):
        assert les.has_mask and les.mask.shape == (len(roi.slabs), 64, 64) and les.mask.dtype == bool
        area_mm2 = les.mask.sum(axis=(1, 2)) * les.pixel_mm**2
        np.testing.assert_allclose(area_mm2, roi.tumour_area * params.spacing[0] ** 2, rtol=0.15)
        assert les.volume_mm3 >= roi.tumour_area.sum() * np.prod(params.spacing) * 0.99
        inside = roi.slabs[:, 1].astype(np.float32)[les.mask]
        assert inside.size > 20


def test_a_scan_without_mask_has_an_empty_lesion_and_roi_features(tmp_path) -> None:
    import nibabel as nib

    from trainers.manifest import Scan

    params = pre.PreprocessParams(roi_px=50, slices=3)
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 1, (120, 120, 6)).astype(np.float32)
    volume[30:90, 30:90] += 100  # the body: 60 px across, in a dark background
    nib.save(nib.Nifti1Image(volume, np.diag([*params.spacing, 1.0])), tmp_path / "scan.nii.gz")
    roi, lesion = pre.preprocess_lesion(Scan("P1", tmp_path / "scan.nii.gz", None, 0, None), params)
    assert not lesion.has_mask and not lesion.mask.any() and lesion.mask.shape == (3, 50, 50)
    # the ROI is the body's outline plus the margin on each side (not a fixed field), in 50 px
    body_px = 60 + 2 * params.margin_mm / params.spacing[0]
    assert lesion.pixel_mm == pytest.approx(body_px * params.spacing[0] / 50, rel=0.015)  # a 1-px rounding
    names, _, x, _, masks = feature_table([roi], [lesion])
    assert not masks and names == feature_names(False) and np.isfinite(x).all()
