"""Every registered image format round-trips a volume: write it, read it back, same voxels, same geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainers.io import (
    READERS,
    ImageReader,
    ImageReadError,
    image_kind,
    load_header,
    load_image,
    register_reader,
)
from trainers.volume import Volume


def example(reader: ImageReader) -> Volume:
    """Integer voxels (every format stores those exactly); an oblique, anisotropic affine unless planar."""
    rng = np.random.default_rng(0)
    depth = 1 if reader.planar else 4
    array = rng.integers(0, 1000, size=(7, 5, depth)).astype(np.float32)
    if reader.planar:
        return Volume(array, np.eye(4))
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.7, 0.9, 3.5])
    affine[:3, 3] = [-12.5, 30.25, 7.0]
    return Volume(array, affine)


@pytest.mark.parametrize("kind", list(READERS))
def test_every_reader_round_trips(kind: str, tmp_path: Path) -> None:
    reader = READERS[kind]
    volume = example(reader)
    path = reader.write(volume, tmp_path / "scan")
    assert image_kind(path) == kind
    back = load_image(path)
    assert back.array.dtype == np.float32 and back.array.shape == volume.array.shape
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    shape, affine = load_header(path)
    assert shape == volume.array.shape
    np.testing.assert_allclose(affine, volume.affine, atol=1e-4)


@pytest.mark.parametrize("kind", list(READERS))
def test_every_reader_claims_its_suffixes(kind: str, tmp_path: Path) -> None:
    for suffix in READERS[kind].suffixes:
        (tmp_path / f"x{suffix}").write_bytes(b"not an image")
        assert image_kind(tmp_path / f"x{suffix}") == kind
        with pytest.raises(ImageReadError):  # a clear error, never a crash
            load_image(tmp_path / f"x{suffix}")


def test_a_new_format_is_one_entry(tmp_path: Path) -> None:
    """A registered reader is found by suffix and named in the error for unknown types."""
    npy = ImageReader(
        "numpy",
        (".npy",),
        load=lambda p: Volume(np.load(p).astype(np.float32), np.eye(4)),
        header=lambda p: (np.load(p, mmap_mode="r").shape, np.eye(4)),
        write=lambda v, stem: (np.save(f"{stem}.npy", v.array), Path(f"{stem}.npy"))[1],
        planar=True,
    )
    register_reader(npy)
    try:
        test_every_reader_round_trips("numpy", tmp_path)
        (tmp_path / "scan.mha").write_bytes(b"x")
        with pytest.raises(ImageReadError, match=r"\.npy"):
            load_image(tmp_path / "scan.mha")
    finally:
        del READERS["numpy"]
    with pytest.raises(ValueError, match="already registered"):
        register_reader(READERS["nifti"])
