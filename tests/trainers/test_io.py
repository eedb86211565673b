"""Tests for trainers.io: NIfTI/DICOM/PNG reading into float32 (X, Y, Z) volumes with RAS+ affines."""

from __future__ import annotations

import dataclasses
import gzip
import os
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from trainers.io import ImageReadError, Volume, load_header, load_image

# ---------------------------------------------------------------- NIfTI


def test_reads_real_nifti_shipped_with_nibabel() -> None:
    path = os.path.join(data_path, "anatomical.nii")
    ref = nib.load(path)
    vol = load_image(path)
    assert vol.array.shape == (33, 41, 25)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, ref.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(vol.affine, ref.affine)
    assert vol.spacing == pytest.approx((2.0, 2.0, 2.0))
    shape, affine = load_header(path)
    assert shape == (33, 41, 25)
    np.testing.assert_allclose(affine, ref.affine)


def test_real_4d_nifti_is_rejected_with_its_shape() -> None:
    path = os.path.join(data_path, "example4d.nii.gz")
    for reader in (load_image, load_header):
        with pytest.raises(ImageReadError, match=r"4D image \(shape \(128, 96, 24, 2\)\) where a 3D volume"):
            reader(path)


def _oblique_affine() -> np.ndarray:
    """A non-trivial affine: anisotropic voxels, a rotation and an offset."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 0.9, 3.5])
    affine[:3, 3] = [-12.5, 30.25, 7.0]
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_array_and_affine(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(9, 7, 5)).astype(np.float32)
    path = tmp_path / f"vol{suffix}"
    nib.save(nib.Nifti1Image(data, _oblique_affine()), path)
    vol = load_image(path)
    assert isinstance(vol, Volume)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, _oblique_affine(), atol=1e-5)
    assert vol.spacing == pytest.approx((0.7, 0.9, 3.5), abs=1e-5)


def test_integer_nifti_with_scaling_is_returned_scaled_as_float32(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    vol = load_image(tmp_path / "scaled.nii.gz")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, np.arange(24).reshape(2, 3, 4) * 0.5 + 10.0)


def test_2d_nifti_gets_a_z_axis_of_one(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "slice.nii.gz")
    vol = load_image(tmp_path / "slice.nii.gz")
    assert vol.array.shape == (3, 4, 1)
    np.testing.assert_array_equal(vol.array[:, :, 0], data)
    assert load_header(tmp_path / "slice.nii.gz")[0] == (3, 4, 1)


def test_4d_nifti_with_single_volume_is_squeezed(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "one.nii")
    vol = load_image(tmp_path / "one.nii")
    assert vol.array.shape == (2, 3, 4)
    np.testing.assert_array_equal(vol.array, data[..., 0])


@pytest.mark.parametrize("keep", [0.5, "minus_trailer"])
def test_truncated_nifti_gz_raises_image_read_error(tmp_path: Path, keep: float | str) -> None:
    rng = np.random.default_rng(1)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=(16, 16, 8)).astype(np.float32), np.eye(4)), good)
    raw = good.read_bytes()
    cut = len(raw) - 4 if keep == "minus_trailer" else int(len(raw) * keep)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(raw[:cut])
    with pytest.raises(ImageReadError, match="truncated or corrupt gzip") as info:
        load_image(bad)
    assert info.value.path == bad


def test_truncated_uncompressed_nifti_raises(tmp_path: Path) -> None:
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8), np.float32), np.eye(4)), good)
    (tmp_path / "bad.nii").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ImageReadError, match="truncated"):
        load_image(tmp_path / "bad.nii")


def _promising(tmp_path: Path, shape: tuple[int, ...], gz: bool) -> Path:
    """A NIfTI whose header claims `shape` float32 voxels but which holds the voxels of a 4 x 4 x 4 volume."""
    small = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    small.header.set_data_shape(shape)
    small.header.set_data_offset(352)
    raw = small.header.binaryblock + b"\0" * 4 + np.ones(64, np.float32).tobytes()
    path = tmp_path / ("big.nii.gz" if gz else "big.nii")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_a_header_promising_more_than_the_file_holds_is_refused_before_reading(
    tmp_path: Path, gz: bool
) -> None:
    import tracemalloc

    path = _promising(tmp_path, (512, 512, 512), gz)  # 128 M voxels: 512 MiB as float32, within the limit
    tracemalloc.start()
    try:
        expected = "header promises 536,870,912 bytes of voxel data but the file holds 256"
        with pytest.raises(ImageReadError, match=expected) as info:
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path == path and peak < 16 * 2**20  # nothing the size of the promise was allocated


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_a_header_promising_more_voxels_than_a_scan_may_have_is_refused(tmp_path: Path, gz: bool) -> None:
    from trainers.io import MAX_VOXELS

    with pytest.raises(ImageReadError, match="more than a scan may have") as info:
        load_image(_promising(tmp_path, (4096, 4096, 4096), gz))
    assert f"{4096**3:,} voxels" in str(info.value) and 4096**3 > MAX_VOXELS


def test_running_out_of_memory_while_reading_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainers import io

    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), good)

    def no_memory(path: Path) -> Volume:
        raise MemoryError

    monkeypatch.setitem(io.READERS, "nifti", dataclasses.replace(io.READERS["nifti"], load=no_memory))
    with pytest.raises(ImageReadError, match="not enough memory to read its voxels") as info:
        load_image(good)
    assert info.value.path == good


def test_garbage_nifti_header_raises_short_reason(tmp_path: Path) -> None:
    (tmp_path / "junk.nii").write_bytes(b"this is not an image" * 40)
    with pytest.raises(ImageReadError, match="not a valid NIfTI file") as info:
        load_image(tmp_path / "junk.nii")
    assert "\n" not in str(info.value)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found"):
        load_image(tmp_path / "nope.nii.gz")
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(ImageReadError, match=r"unsupported image type '\.mha'"):
        load_image(tmp_path / "scan.mha")


# ---------------------------------------------------------------- DICOM

ROW_SPACING, COL_SPACING, SLICE_GAP = 0.8, 0.6, 3.0  # PixelSpacing = [between rows, between columns]


def _orientation() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Oblique row/column direction cosines (LPS) and their slice normal."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    return rot[:, 0], rot[:, 1], np.cross(rot[:, 0], rot[:, 1])


def _write_slice(path: Path, pixels: np.ndarray, series_uid: str, ipp: np.ndarray, **extra: object) -> None:
    """Write one single-frame MR DICOM slice with the given int16 pixels and geometry."""
    row_cos, col_cos, _ = _orientation()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [ROW_SPACING, COL_SPACING]
    ds.SliceThickness = SLICE_GAP
    ds.ImageOrientationPatient = [float(v) for v in (*row_cos, *col_cos)]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<i2").tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _write_series(folder: Path, n_slices: int = 4, rows: int = 5, cols: int = 7, seed: int = 0) -> list:
    """Write a shuffled oblique series; return per-slice (pixels, slope, intercept) in true spatial order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _, _, normal = _orientation()
    origin = np.array([10.0, -20.0, 35.0])
    uid = generate_uid()
    truth = [(rng.integers(-500, 500, size=(rows, cols)), 1.0 + k * 0.5, -100.0 * k) for k in range(n_slices)]
    order = list(range(n_slices))
    random.Random(seed).shuffle(order)
    for rank, k in enumerate(order):  # file names and InstanceNumber deliberately unrelated to position
        pixels, slope, intercept = truth[k]
        _write_slice(
            folder / f"IM{rank:04d}",
            pixels,
            uid,
            origin + k * SLICE_GAP * normal,
            RescaleSlope=slope,
            RescaleIntercept=intercept,
            InstanceNumber=rank + 1,
        )
    return truth


def _expected_ras(i: int, j: int, k: int) -> np.ndarray:
    """World position (RAS) of voxel (column i, row j, slice k) from the DICOM geometry formula."""
    row_cos, col_cos, normal = _orientation()
    lps = np.array([10.0, -20.0, 35.0]) + i * COL_SPACING * row_cos + j * ROW_SPACING * col_cos
    lps = lps + k * SLICE_GAP * normal
    return lps * np.array([-1.0, -1.0, 1.0])


def test_dicom_series_is_sorted_rescaled_and_geolocated(tmp_path: Path) -> None:
    truth = _write_series(tmp_path / "series")
    (tmp_path / "series" / "README.txt").write_text("not a DICOM file")
    vol = load_image(tmp_path / "series")
    assert vol.array.shape == (7, 5, 4)  # (columns, rows, slices)
    assert vol.array.dtype == np.float32
    for k, (pixels, slope, intercept) in enumerate(truth):
        np.testing.assert_allclose(vol.array[:, :, k], pixels.T * slope + intercept)
    for i, j, k in [(0, 0, 0), (6, 0, 0), (0, 4, 0), (0, 0, 3), (6, 4, 3), (3, 2, 1)]:
        np.testing.assert_allclose(vol.affine @ [i, j, k, 1.0], [*_expected_ras(i, j, k), 1.0], atol=1e-4)
    assert vol.spacing == pytest.approx((COL_SPACING, ROW_SPACING, SLICE_GAP), abs=1e-5)
    shape, affine = load_header(tmp_path / "series")
    assert shape == (7, 5, 4)
    np.testing.assert_allclose(affine, vol.affine)


def test_dicom_folder_with_two_series_names_both(tmp_path: Path) -> None:
    _write_series(tmp_path / "mixed", n_slices=2, seed=1)
    other = generate_uid()
    _write_slice(tmp_path / "mixed" / "zzz", np.zeros((5, 7)), other, np.array([0.0, 0.0, 90.0]))
    with pytest.raises(ImageReadError, match="2 DICOM series") as info:
        load_image(tmp_path / "mixed")
    assert other in str(info.value)


def test_dicom_duplicate_positions_are_rejected(tmp_path: Path) -> None:
    uid = generate_uid()
    (tmp_path / "echo").mkdir()
    for n in range(2):  # two echoes at the same position: really 4D
        _write_slice(tmp_path / "echo" / f"e{n}", np.full((5, 7), n), uid, np.zeros(3), EchoNumbers=n + 1)
    with pytest.raises(ImageReadError, match="share one position"):
        load_image(tmp_path / "echo")


def test_folder_without_dicom_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="no DICOM image"):
        load_image(tmp_path / "empty")


def test_single_slice_series_from_pydicom_test_data(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    source = get_testdata_file("MR_small.dcm", download=False)
    if source is None:
        pytest.skip("pydicom test file MR_small.dcm is not installed")
    folder = tmp_path / "mr"
    folder.mkdir()
    shutil.copy(source, folder / "slice1")
    ref = pydicom.dcmread(source)
    vol = load_image(folder)
    assert vol.array.shape == (64, 64, 1)
    slope = float(ref.get("RescaleSlope", 1.0))
    intercept = float(ref.get("RescaleIntercept", 0.0))
    np.testing.assert_allclose(vol.array[:, :, 0], ref.pixel_array.T * slope + intercept)
    ipp = [float(v) for v in ref.ImagePositionPatient]
    np.testing.assert_allclose(vol.affine[:3, 3], [-ipp[0], -ipp[1], ipp[2]], atol=1e-4)
    assert vol.spacing == pytest.approx((0.3125, 0.3125, float(ref.SliceThickness)), abs=1e-5)
    np.testing.assert_allclose(load_image(source).array, vol.array)  # a lone .dcm file works too


# ---------------------------------------------------------------- PNG / JPEG


def test_png_round_trip_uses_width_height_axis_order(tmp_path: Path) -> None:
    pixels = np.arange(35, dtype=np.uint8).reshape(5, 7)  # 5 rows (height) x 7 columns (width)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    vol = load_image(tmp_path / "img.png")
    assert vol.array.shape == (7, 5, 1)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array[:, :, 0], pixels.T)
    np.testing.assert_array_equal(vol.affine, np.eye(4))
    assert load_header(tmp_path / "img.png") == ((7, 5, 1), pytest.approx(np.eye(4)))


def test_rgb_png_becomes_grayscale_and_16_bit_keeps_range(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    vol = load_image(tmp_path / "rgb.png")
    assert vol.array.shape == (6, 4, 1)
    expected = Image.fromarray(rgb).convert("L").getpixel((0, 0))
    np.testing.assert_array_equal(vol.array, np.full((6, 4, 1), expected, np.float32))
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png").array[:, :, 0], deep.T.astype(np.float32))


def test_jpeg_reads_approximately(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (8, 1))
    Image.fromarray(pixels).save(tmp_path / "img.JPG", quality=95)
    vol = load_image(tmp_path / "img.JPG")
    assert vol.array.shape == (16, 8, 1)
    assert np.abs(vol.array[:, :, 0] - pixels.T).max() < 12


def test_corrupt_png_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError, match="not a readable PNG/JPEG"):
        load_image(tmp_path / "bad.png")
