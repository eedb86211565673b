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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainers.dicom import dicom_header, load_dicom, write_dicom
from trainers.volume import ImageReadError, Volume, shape_3d, short_reason, source_files

__all__ = [
    "READERS",
    "ImageReadError",
    "ImageReader",
    "Volume",
    "check_scan_files",
    "image_kind",
    "load_header",
    "load_image",
    "register_reader",
    "scan_problems",
    "source_files",
]

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


# ---------------------------------------------------------------- NIfTI


def _open_nifti(path: Path):  # -> nibabel image (proxy, no data read yet)
    """Open a NIfTI header lazily, turning nibabel/gzip failures into ImageReadError."""
    import nibabel as nib

    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt gzip data ({short_reason(exc)})") from None
    except Exception as exc:  # nibabel raises a zoo of types for bad headers
        if path.name.lower().endswith(".gz") and (gz := _gzip_problem(path)):
            raise ImageReadError(path, f"truncated or corrupt gzip data ({gz})") from None
        raise ImageReadError(path, f"not a valid NIfTI file ({short_reason(exc)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageReadError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def _gzip_problem(path: Path) -> str | None:
    """Return why the start of a gzip file cannot be decompressed (e.g. truncated), or None if it can."""
    try:
        with gzip.open(path, "rb") as fh:
            fh.read(1024)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        return short_reason(exc)
    return None


#: The most voxels a scan may have (2^28: 1 GiB as float32; a 512 x 512 x 300 MRI volume has 79 M). A header
#: promising more is refused before any voxel is read, so a bad file cannot make validation take the memory.
MAX_VOXELS = 2**28
_MAX_NIFTI_BYTES = MAX_VOXELS * 8 + 2**20  # the widest voxel type (float64), plus header and extensions


def _check_promise(path: Path, img, held: int) -> None:
    """Refuse a NIfTI whose header promises more voxels than a scan may have, or more voxel bytes than the file
    (`held` bytes, decompressed) holds: nothing is allocated for what is not there."""
    header = img.header
    voxels = int(np.prod([int(n) for n in img.shape], dtype=np.int64)) if img.shape else 0
    if voxels > MAX_VOXELS:
        shape = " x ".join(str(int(n)) for n in img.shape)
        raise ImageReadError(
            path, f"header promises {voxels:,} voxels ({shape}), more than a scan may have ({MAX_VOXELS:,})"
        )
    offset = int(
        getattr(img.dataobj, "offset", None) or header.get_data_offset()
    )  # the header's reads 0 once loaded
    needed = offset + voxels * header.get_data_dtype().itemsize
    if held < needed:
        raise ImageReadError(
            path,
            f"header promises {needed - offset:,} bytes of voxel data but the file holds {max(held - offset, 0):,}: "
            "truncated, or its header is wrong",
        )


def _gunzip(path: Path, limit: int) -> bytes:
    """The decompressed bytes of a gzip file, read a megabyte at a time, refused past `limit` bytes."""
    chunks, total = [], 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(2**20):
            total += len(chunk)
            if total > limit:
                raise ImageReadError(path, f"decompresses to more than a scan may hold ({limit:,} bytes)")
            chunks.append(chunk)
    return b"".join(chunks)


def _open_nifti_verified(path: Path):  # -> (in-memory nibabel image, decompressed bytes)
    """Decompress a .nii.gz fully (so gzip's CRC/length trailer is checked) and parse it from memory; no more
    than a scan may hold is decompressed (a small file can promise gigabytes)."""
    import nibabel as nib

    try:
        raw = _gunzip(path, _MAX_NIFTI_BYTES)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt gzip data ({short_reason(exc)})") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({short_reason(exc)})") from None
    sizeof_hdr = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Image if sizeof_hdr == 540 else nib.Nifti1Image
    try:
        with _quiet_nibabel():
            return klass.from_bytes(raw), len(raw)
    except Exception as exc:  # bad header fields, short data, ...
        raise ImageReadError(path, f"not a valid NIfTI file ({short_reason(exc)})") from None


def _load_nifti(path: Path) -> Volume:
    """Read a .nii/.nii.gz file (scaled voxels) as a float32 3D Volume."""
    if path.name.lower().endswith(".gz"):
        img, held = _open_nifti_verified(path)
    else:
        img, held = _open_nifti(path), path.stat().st_size
    _check_promise(path, img, held)
    shape = shape_3d(path, tuple(int(n) for n in img.shape))
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt gzip data ({short_reason(exc)})") from None
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"truncated or unreadable voxel data ({short_reason(exc)})") from None
    return Volume(array=np.ascontiguousarray(data.reshape(shape)), affine=np.array(img.affine, dtype=float))


def _nifti_header(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    img = _open_nifti(path)
    return shape_3d(path, tuple(int(n) for n in img.shape)), np.array(img.affine, dtype=float)


def _write_nifti(volume: Volume, stem: Path) -> Path:
    import nibabel as nib

    path = Path(f"{stem}.nii.gz")
    nib.save(nib.Nifti1Image(volume.array, volume.affine), path)
    return path


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
        raise ImageReadError(path, f"not a readable PNG/JPEG ({short_reason(exc)})") from None
    return Volume(array=np.ascontiguousarray(pixels.T[:, :, np.newaxis]), affine=np.eye(4))


def _bitmap_header(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(path, f"not a readable PNG/JPEG ({short_reason(exc)})") from None
    return (int(width), int(height), 1), np.eye(4)


def _write_bitmap(volume: Volume, stem: Path) -> Path:
    """A 16-bit grayscale PNG of a one-slice volume (voxels must be integers in 0..65535)."""
    from PIL import Image

    path = Path(f"{stem}.png")
    Image.fromarray(np.ascontiguousarray(volume.array[:, :, 0].T).astype(np.uint16)).save(path)
    return path


# ---------------------------------------------------------------- the reader table


@dataclass(frozen=True)
class ImageReader:
    """One image format: the file names (or folders) it claims, how to read it, its header, and how to write it.

    `planar` formats hold one slice without geometry (their affine is the identity). `write(volume, stem)`
    writes `volume` next to `stem` and returns the path it wrote: the shared round-trip test uses it, so a new
    format is tested by adding its entry.
    """

    kind: str
    suffixes: tuple[str, ...]
    load: Callable[[Path], Volume]
    header: Callable[[Path], tuple[tuple[int, int, int], np.ndarray]]
    write: Callable[[Volume, Path], Path]
    folder: bool = False
    planar: bool = False


READERS: dict[str, ImageReader] = {}


def register_reader(reader: ImageReader) -> ImageReader:
    """Make a format readable everywhere images are read (manifests, preprocessing, prediction)."""
    if reader.kind in READERS:
        raise ValueError(f"image format {reader.kind!r} is already registered")
    READERS[reader.kind] = reader
    return reader


register_reader(ImageReader("nifti", (".nii", ".nii.gz"), _load_nifti, _nifti_header, _write_nifti))
register_reader(ImageReader("dicom", (".dcm",), load_dicom, dicom_header, write_dicom, folder=True))
register_reader(
    ImageReader("bitmap", (".png", ".jpg", ".jpeg"), _load_bitmap, _bitmap_header, _write_bitmap, planar=True)
)


def image_kind(path: str | Path) -> str:
    """The format of a path (a key of READERS) from its name or type, or an ImageReadError naming the allowed ones."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "file not found")
    name = p.name.lower()
    for reader in READERS.values():
        if (reader.folder and p.is_dir()) or (not p.is_dir() and name.endswith(reader.suffixes)):
            return reader.kind
    suffix = ("".join(p.suffixes[-2:]) if p.suffix.lower() == ".gz" else p.suffix) or "(no extension)"
    allowed = ", ".join(s for r in READERS.values() for s in r.suffixes)
    folders = " or a " + " or ".join(f"{r.kind.upper()} series folder" for r in READERS.values() if r.folder)
    raise ImageReadError(p, f"unsupported image type '{suffix}' (expected {allowed}{folders})")


def patient_id_from_path(path: str | Path) -> str:
    """A patient id for a scan given without one: its file name less the image suffix (`case_a_t2.nii.gz` ->
    `case_a_t2`), or a DICOM series folder's name, so predictions name the scan rather than a placeholder."""
    p = Path(str(path).rstrip("/\\"))
    name = p.name
    for suffix in sorted((s for r in READERS.values() for s in r.suffixes), key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name or str(path)


def load_image(path: str | Path) -> Volume:
    """Read any supported image into a float32 3D Volume, raising ImageReadError with a short reason (also when
    the machine cannot hold it: the patient is refused, not the whole run)."""
    try:
        return READERS[image_kind(path)].load(Path(path))
    except MemoryError:
        raise ImageReadError(
            Path(path), "not enough memory to read its voxels (is its header right?)"
        ) from None


def load_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Return (3D shape, affine) as load_image would, reading no voxel data where the format allows."""
    return READERS[image_kind(path)].header(Path(path))


GEOMETRY_TOLERANCE_MM = 1e-3


def check_scan_files(image: Path, mask: Path | None = None) -> list[str]:
    """Problems reading one scan and its mask (unreadable, 4D, NaN/inf, mask mismatch or empty); [] if fine."""
    return scan_problems(image, str(image), mask, str(mask) if mask else "")


def scan_problems(
    image: Path,
    image_raw: str,
    mask: Path | None,
    mask_raw: str,
    seen: Callable[[Path, np.ndarray], None] | None = None,
) -> list[str]:
    """Read an image (and its mask) once and report unreadable/4D files, NaN/inf, mask mismatch or emptiness.

    `seen(image, voxels)` is called with the decoded image, so other checks need not read it again."""
    problems = []
    geometry = None
    try:
        vol = load_image(image)
        if seen is not None:
            seen(image, vol.array)
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
