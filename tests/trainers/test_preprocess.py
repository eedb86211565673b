"""Preprocessing: ROI slabs from real NIfTI volumes, cached so a second load reads no scan."""

from __future__ import annotations

import numpy as np
import pytest

import trainers.preprocess as pre
from trainers.data import build_slice_data
from trainers.manifest import load_manifest


@pytest.fixture()
def cohort(tiny_cohort):
    return load_manifest(tiny_cohort, folds=2)


def test_second_load_hits_cache(cohort, tmp_path, monkeypatch) -> None:
    calls = []
    real = pre.load_image
    monkeypatch.setattr(pre, "load_image", lambda p: calls.append(p) or real(p))
    params = pre.PreprocessParams(roi_px=32, slices=2)
    first = pre.load_rois(cohort, params, cache_dir=tmp_path, progress=False)
    n_first = len(calls)
    assert n_first >= len(cohort.scans)  # image (+ mask) of every scan read once
    second = pre.load_rois(cohort, params, cache_dir=tmp_path, progress=False)
    assert len(calls) == n_first  # the scan reader was not called again
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.slabs, b.slabs)
    pre.load_rois(cohort, pre.PreprocessParams(roi_px=32, slices=3), cache_dir=tmp_path, progress=False)
    assert len(calls) > n_first  # other parameters are another cache entry


def test_roi_shapes_and_normalisation(cohort, tmp_path) -> None:
    rois = pre.load_rois(
        cohort, pre.PreprocessParams(roi_px=40, slices=3), cache_dir=tmp_path, progress=False
    )
    assert len(rois) == len(cohort.scans)
    for roi in rois:
        assert roi.slabs.shape[1:] == (3, 40, 40)
        assert 1 <= roi.slabs.shape[0] <= 3
        assert np.isfinite(roi.slabs.astype(np.float32)).all()
        assert (roi.tumour_area > 0).all()  # chosen slices contain tumour
    x = np.concatenate([r.slabs for r in rois]).astype(np.float32)
    assert abs(float(x.mean())) < 3 and 0.05 < float(x.std()) < 10


def test_slice_data_resizes_cached_arrays(cohort, tmp_path) -> None:
    rois = pre.load_rois(
        cohort, pre.PreprocessParams(roi_px=48, slices=2), cache_dir=tmp_path, progress=False
    )
    one = build_slice_data(rois, resolution=32, channels=1)
    three = build_slice_data(rois, resolution=24, channels=3)
    assert one.x.shape[1:] == (1, 32, 32) and three.x.shape[1:] == (3, 24, 24)
    assert len(one.patients) == len(cohort.patients)
    assert set(one.patient_label.tolist()) == {0, 1}


def test_scan_without_mask_is_cropped_around_the_centre(tmp_path) -> None:
    """No mask: the middle slices, cropped to the no-mask field of view (80 mm) around the image centre."""
    import nibabel as nib

    from trainers.manifest import Scan

    params = pre.PreprocessParams(roi_px=101, slices=3)  # 80 mm / 0.8 mm = 100 px: a box of 101, not resized
    x, y, z = np.meshgrid(np.arange(200.0), np.arange(200.0), np.arange(6.0), indexing="ij")
    volume = (10 * (x % 7) + 3 * (y % 5) + 20 * z).astype(np.float32)  # a 1-px shift changes every voxel
    affine = np.diag([*params.spacing, 1.0])  # already at the working spacing: no resampling
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "scan.nii.gz")
    roi = pre.preprocess_scan(Scan("P1", tmp_path / "scan.nii.gz", None, 0, None), params)

    norm = pre._normalise(volume, params.clip_percentiles)
    expected = [norm[50:151, 50:151, c - 1 : c + 2].transpose(2, 0, 1) for c in (2, 3, 4)]  # centre 99.5
    assert roi.slabs.shape == (3, 3, 101, 101)
    np.testing.assert_allclose(roi.slabs.astype(np.float32), np.stack(expected), atol=1e-2)
    assert not roi.tumour_area.any()
