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


def test_scan_without_mask_is_cropped_to_its_foreground(tmp_path) -> None:
    """No mask: the middle slices, cropped to a square around the body (the foreground) plus the margin."""
    import nibabel as nib

    from trainers.manifest import Scan

    params = pre.PreprocessParams(roi_px=138, slices=3)  # the box below is 138 px: not resized
    x, y, z = np.meshgrid(np.arange(200.0), np.arange(200.0), np.arange(6.0), indexing="ij")
    body = (x >= 20) & (x < 120) & (y >= 60) & (y < 160)  # off the image centre
    volume = np.where(body, 100 + 10 * (x % 7) + 3 * (y % 5) + 20 * z, 0).astype(np.float32)
    affine = np.diag([*params.spacing, 1.0])  # already at the working spacing: no resampling
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "scan.nii.gz")
    roi = pre.preprocess_scan(Scan("P1", tmp_path / "scan.nii.gz", None, 0, None), params)

    norm = pre._normalise(volume, params.clip_percentiles)
    # body x 20..119, y 60..159: centre (69.5, 109.5), half 49.5 + 15 mm / 0.8 mm = 68.25
    expected = [norm[1:139, 41:179, c - 1 : c + 2].transpose(2, 0, 1) for c in (2, 3, 4)]
    assert roi.slabs.shape == (3, 3, 138, 138)
    np.testing.assert_allclose(roi.slabs.astype(np.float32), np.stack(expected), atol=1e-2)
    assert not roi.tumour_area.any()


def _bitmap(path, width: int, height: int, lesion: tuple[int, int], radius: int) -> None:
    """An 8-bit grayscale bitmap: noisy background, an elliptic body left of centre, a bright round lesion."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    pixels = 8 + 4 * rng.standard_normal((height, width))
    body = ((x - 0.42 * width) / (0.36 * width)) ** 2 + ((y - 0.5 * height) / (0.4 * height)) ** 2 <= 1
    pixels[body] = 90 + 10 * rng.standard_normal(int(body.sum()))
    pixels[(x - lesion[0]) ** 2 + (y - lesion[1]) ** 2 <= radius**2] = 240
    pixels[3, width - 4] = 255  # a stray bright pixel off the body must not stretch the crop
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def test_off_centre_lesion_of_a_large_bitmap_is_inside_the_roi(tmp_path) -> None:
    """A 480 x 360 px bitmap (read at 1 mm per pixel) whose lesion lies far from the image centre: the
    foreground crop holds the whole lesion (a fixed 80 mm field at the centre missed it entirely)."""
    from trainers.io import load_image
    from trainers.manifest import Scan

    width, height, (lx, ly), radius = 480, 360, (70, 110), 20
    _bitmap(tmp_path / "scan.png", width, height, (lx, ly), radius)
    params = pre.PreprocessParams(roi_px=128)
    roi = pre.preprocess_scan(Scan("P1", tmp_path / "scan.png", None, 0, None), params)
    plane = roi.slabs[0, 1].astype(np.float32)
    assert roi.slabs.shape == (1, 3, 128, 128)
    whole = pre._normalise(load_image(tmp_path / "scan.png").array, params.clip_percentiles)
    bright = plane > (whole.max() + np.percentile(whole, 90)) / 2  # the lesion: halfway from the body's level
    xs, ys = np.nonzero(bright)
    assert bright.sum() > 50, "the lesion is not in the ROI"
    assert xs.min() > 0 and ys.min() > 0 and xs.max() < 127 and ys.max() < 127  # not cut by the ROI's edge
    # the ROI is square and keeps the aspect ratio: the lesion stays round
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 2
    # the crop is the body (about 346 x 288 px plus margins), not the whole image nor a small central field
    side_px = 2 * radius * 128 / (xs.max() - xs.min() + 1)
    assert 0.8 * 0.72 * width < side_px < width


def test_foreground_ignores_stray_pixels_and_featureless_images() -> None:
    planes = np.zeros((100, 80, 1), np.float32)
    planes[20:60, 10:50] = 5.0
    planes[95, 75] = 9.0  # a bright speck off the body
    fg = pre.foreground(planes)
    xs, ys = np.nonzero(fg)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 59, 10, 49)
    assert not pre.foreground(np.ones((10, 10, 2), np.float32)).any()
