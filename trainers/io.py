"""Read MRI volumes (NIfTI, DICOM series folders, PNG/JPEG) into one float32 3D array + affine.

Conventions, shared by every format so downstream code never needs to know where an image came from:

* ``Volume.array`` is float32 with exactly three axes ``(X, Y, Z)`` in the file's own voxel order (no
  reorientation); 2D images get ``Z = 1``.
* ``Volume.affine`` maps voxel indices ``(i, j, k, 1)`` to world millimetres in RAS+ (the nibabel
  convention).
* DICOM series: ``X`` runs along a row (the DICOM column index), ``Y`` down the rows, ``Z`` along the slice
  normal (row cosine x column cosine) in increasing position; the affine is built in LPS from
  ImageOrientationPatient / ImagePositionPatient / PixelSpacing and flipped to RAS.
* PNG/JPEG: same layout as DICOM, i.e. ``array[x, y, 0] == pixel(column x, row y)``, shape
  ``(width, height, 1)``, identity affine (1 mm isotropic).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
BITMAP_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_FILE_SUFFIXES = (".dcm",)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_quiet = threading.local()


def _not_quieted(record: logging.LogRecord) -> bool:
    """Logging filter: drop nibabel's header-check chatter emitted while this thread is parsing a file."""
    return not getattr(_quiet, "active", False)


logging.getLogger("nibabel.global").addFilter(_not_quieted)


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's logged header complaints in this thread; the failure is raised as ImageReadError."""
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = False


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


def image_kind(path: str | Path) -> str:
    """Classify a path as 'nifti', 'dicom' or 'bitmap' from its name/type, or raise ImageReadError."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "file not found")
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(BITMAP_SUFFIXES):
        return "bitmap"
    if name.endswith(DICOM_FILE_SUFFIXES):
        return "dicom"
    suffix = ("".join(p.suffixes[-2:]) if p.suffix.lower() == ".gz" else p.suffix) or "(no extension)"
    allowed = ".nii, .nii.gz, .png, .jpg, .jpeg, .dcm or a DICOM series folder"
    raise ImageReadError(p, f"unsupported image type '{suffix}' (expected {allowed})")


def load_image(path: str | Path) -> Volume:
    """Read any supported image into a float32 3D Volume, raising ImageReadError with a short reason."""
    kind = image_kind(path)
    if kind == "nifti":
        return _load_nifti(Path(path))
    if kind == "dicom":
        return _load_dicom(Path(path))
    return _load_bitmap(Path(path))


def load_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Return (3D shape, affine) as load_image would, reading no voxel data where the format allows."""
    p = Path(path)
    kind = image_kind(p)
    if kind == "nifti":
        img = _open_nifti(p)
        return _shape_3d(p, tuple(int(n) for n in img.shape)), np.array(img.affine, dtype=float)
    if kind == "dicom":
        slices = _dicom_slices(p, with_pixels=False)
        affine = _dicom_affine(p, slices)
        return (int(slices[0].Columns), int(slices[0].Rows), len(slices)), affine
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(p, f"not a readable PNG/JPEG ({_short(exc)})") from None
    return (int(width), int(height), 1), np.eye(4)


# ---------------------------------------------------------------- NIfTI


def _short(exc: BaseException) -> str:
    """One-line, length-capped description of an exception for user-facing messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _shape_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Map a stored shape to (X, Y, Z): add Z for 2D, drop trailing singleton dims, reject true 4D+."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3:
        raise ImageReadError(path, f"{len(dims)}D image (shape {tuple(shape)}) where a 3D volume is expected")
    return (dims[0], dims[1], dims[2])


def _open_nifti(path: Path):  # -> nibabel image (proxy, no data read yet)
    """Open a NIfTI header lazily, turning nibabel/gzip failures into ImageReadError."""
    import nibabel as nib

    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt gzip data ({_short(exc)})") from None
    except Exception as exc:  # nibabel raises a zoo of types for bad headers
        if path.name.lower().endswith(".gz") and (gz := _gzip_problem(path)):
            raise ImageReadError(path, f"truncated or corrupt gzip data ({gz})") from None
        raise ImageReadError(path, f"not a valid NIfTI file ({_short(exc)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageReadError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def _gzip_problem(path: Path) -> str | None:
    """Return why the start of a gzip file cannot be decompressed (e.g. truncated), or None if it can."""
    try:
        with gzip.open(path, "rb") as fh:
            fh.read(1024)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        return _short(exc)
    return None


def _open_nifti_verified(path: Path):  # -> in-memory nibabel image
    """Decompress a .nii.gz fully (so gzip's CRC/length trailer is checked) and parse it from memory."""
    import nibabel as nib

    try:
        raw = gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt gzip data ({_short(exc)})") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({_short(exc)})") from None
    sizeof_hdr = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Image if sizeof_hdr == 540 else nib.Nifti1Image
    try:
        with _quiet_nibabel():
            return klass.from_bytes(raw)
    except Exception as exc:  # bad header fields, short data, ...
        raise ImageReadError(path, f"not a valid NIfTI file ({_short(exc)})") from None


def _load_nifti(path: Path) -> Volume:
    """Read a .nii/.nii.gz file (scaled voxels) as a float32 3D Volume."""
    img = _open_nifti_verified(path) if path.name.lower().endswith(".gz") else _open_nifti(path)
    shape = _shape_3d(path, tuple(int(n) for n in img.shape))
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt gzip data ({_short(exc)})") from None
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"truncated or unreadable voxel data ({_short(exc)})") from None
    return Volume(array=np.ascontiguousarray(data.reshape(shape)), affine=np.array(img.affine, dtype=float))


# ---------------------------------------------------------------- DICOM


def source_files(path: str | Path) -> list[Path]:
    """List the files load_image reads for a path: the file itself, or a series folder's non-hidden files."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))


def _dicom_slices(path: Path, with_pixels: bool) -> list:
    """Parse the image slices of one DICOM series and return them sorted along the slice normal."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices = []
    for f in source_files(path):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=not with_pixels)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError):
            continue  # not DICOM (README, thumbnails, ...) or unparseable: not part of the series
        if "Rows" not in ds or "Columns" not in ds or (with_pixels and "PixelData" not in ds):
            continue
        slices.append((f, ds))
    if not slices:
        raise ImageReadError(path, "no DICOM image with pixel data found")
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in slices})
    if len(uids) > 1:
        raise ImageReadError(
            path, f"{len(uids)} DICOM series in one folder (SeriesInstanceUID {', '.join(uids)})"
        )
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in slices}
    if len(sizes) > 1:
        raise ImageReadError(path, f"slices differ in size (rows, columns): {sorted(sizes)}")
    for f, ds in slices:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ImageReadError(
                path, f"multi-frame DICOM ({f.name}) is not supported; export single-frame slices"
            )
    if len(slices) == 1:
        return [slices[0][1]]
    missing = [
        f.name for f, ds in slices if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds
    ]
    if missing:
        raise ImageReadError(path, f"ImageOrientationPatient/ImagePositionPatient missing in {missing[0]}")
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices])
    if np.abs(iops - iops[0]).max() > 1e-4:
        raise ImageReadError(path, "slices have different ImageOrientationPatient")
    normal = np.cross(iops[0, :3], iops[0, 3:])
    positions = np.array(
        [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for _, ds in slices]
    )
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    gaps = np.diff(positions)
    if gaps.min() < 1e-4:
        raise ImageReadError(
            path, "several slices share one position (multi-echo/temporal 4D series where 3D is expected)"
        )
    if gaps.max() - gaps.min() > 0.1 * gaps.mean() + 1e-3:
        raise ImageReadError(
            path, f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm; missing slices?)"
        )
    return [slices[i][1] for i in order]


def _dicom_affine(path: Path, slices: list) -> np.ndarray:
    """Build the RAS+ affine for sorted slices: columns = row dir * dx, column dir * dy, slice step, origin."""
    first = slices[0]
    iop = [float(v) for v in first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    row_cos, col_cos = np.array(iop[:3]), np.array(iop[3:])
    spacing = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]  # [between rows, between columns]
    origin = np.array([float(v) for v in first.get("ImagePositionPatient", [0.0, 0.0, 0.0])])
    if len(slices) > 1:
        last = np.array([float(v) for v in slices[-1].ImagePositionPatient])
        step = (last - origin) / (len(slices) - 1)
    else:
        thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        step = np.cross(row_cos, col_cos) * float(thickness)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]
    lps[:3, 1] = col_cos * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps


def _load_dicom(path: Path) -> Volume:
    """Read a DICOM series folder (or a single .dcm file) with rescale applied as a float32 Volume."""
    slices = _dicom_slices(path, with_pixels=True)
    affine = _dicom_affine(path, slices)
    planes = []
    for ds in slices:
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # missing decoder, corrupt pixel data, ...
            raise ImageReadError(path, f"cannot decode DICOM pixel data ({_short(exc)})") from None
        if pixels.ndim != 2:
            raise ImageReadError(
                path, f"DICOM pixel data has shape {pixels.shape}; only grayscale is supported"
            )
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        planes.append(pixels.astype(np.float32).T * np.float32(slope) + np.float32(intercept))
    return Volume(array=np.ascontiguousarray(np.stack(planes, axis=-1), dtype=np.float32), affine=affine)


# ---------------------------------------------------------------- PNG / JPEG


def _load_bitmap(path: Path) -> Volume:
    """Read a PNG/JPEG as grayscale float32, shape (width, height, 1), identity affine."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I", "F") or im.mode.startswith("I;16"):
                pixels = np.asarray(im, dtype=np.float32)  # keeps 16-bit/float precision
            else:
                pixels = np.asarray(im.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(path, f"not a readable PNG/JPEG ({_short(exc)})") from None
    return Volume(array=np.ascontiguousarray(pixels.T[:, :, np.newaxis]), affine=np.eye(4))


GEOMETRY_TOLERANCE_MM = 1e-3


def check_scan_files(image: Path, mask: Path | None = None) -> list[str]:
    """Problems reading one scan and its mask (unreadable, 4D, NaN/inf, mask mismatch or empty); [] if fine."""
    return scan_problems(image, str(image), mask, str(mask) if mask else "")


def scan_problems(image: Path, image_raw: str, mask: Path | None, mask_raw: str) -> list[str]:
    """Read an image (and its mask) once and report unreadable/4D files, NaN/inf, mask mismatch or emptiness."""
    problems = []
    geometry = None
    try:
        vol = load_image(image)
        geometry = (vol.array.shape, np.asarray(vol.affine, dtype=float))
        if n_bad := int(vol.array.size - np.count_nonzero(np.isfinite(vol.array))):
            problems.append(f"image {image_raw}: {n_bad} NaN/inf voxel(s)")
        del vol
    except ImageReadError as exc:
        problems.append(f"image {image_raw}: {exc.reason}")
    if mask is None:
        return problems
    try:
        m = load_image(mask)
    except ImageReadError as exc:
        return problems + [f"mask {mask_raw}: {exc.reason}"]
    if geometry is not None and m.array.shape != geometry[0]:
        problems.append(f"mask {mask_raw}: shape {m.array.shape} does not match image shape {geometry[0]}")
    elif geometry is not None:
        shape, affine = geometry
        corners = np.array(
            [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
        )
        offset = float(np.abs((np.asarray(m.affine) - affine) @ corners.T)[:3].max())
        if offset > GEOMETRY_TOLERANCE_MM:
            problems.append(
                f"mask {mask_raw}: geometry (affine) does not match image: voxel positions differ by up to "
                f"{offset:.3g} mm (tolerance {GEOMETRY_TOLERANCE_MM} mm)"
            )
    if not np.any(np.isfinite(m.array) & (m.array != 0)):
        problems.append(f"mask {mask_raw}: empty mask (all voxels are zero)")
    return problems
