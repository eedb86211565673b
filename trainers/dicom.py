"""DICOM series (a folder of single-frame slices, or one .dcm file) as a Volume, and back (for tests and exports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.volume import ImageReadError, Volume, short_reason, source_files

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def load_dicom(path: Path) -> Volume:
    """Read a DICOM series folder (or a single .dcm file) with rescale applied as a float32 Volume."""
    slices = _dicom_slices(path, with_pixels=True)
    affine = _dicom_affine(path, slices)
    planes = []
    for ds in slices:
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # missing decoder, corrupt pixel data, ...
            raise ImageReadError(path, f"cannot decode DICOM pixel data ({short_reason(exc)})") from None
        if pixels.ndim != 2:
            raise ImageReadError(
                path, f"DICOM pixel data has shape {pixels.shape}; only grayscale is supported"
            )
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        planes.append(pixels.astype(np.float32).T * np.float32(slope) + np.float32(intercept))
    return Volume(array=np.ascontiguousarray(np.stack(planes, axis=-1), dtype=np.float32), affine=affine)


def dicom_header(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """(X, Y, Z) shape and RAS+ affine of a series, reading no pixel data."""
    slices = _dicom_slices(path, with_pixels=False)
    return (int(slices[0].Columns), int(slices[0].Rows), len(slices)), _dicom_affine(path, slices)


def write_dicom(volume: Volume, stem: Path) -> Path:
    """Write `volume` as a series folder `stem/` of int16 MR slices (voxels must be integers in int16 range)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    lps = _LPS_TO_RAS @ np.asarray(volume.affine, dtype=float)
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    folder, series = Path(stem), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(volume.array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = (
            meta,
            MRImageStorage,
            meta.MediaStorageSOPInstanceUID,
        )
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "MR", series, k + 1
        ds.Rows, ds.Columns = int(volume.array.shape[1]), int(volume.array.shape[0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing = [float(dy), float(dx)]  # between rows, between columns
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.ImageOrientationPatient = [float(v) for v in (*(lps[:3, 0] / dx), *(lps[:3, 1] / dy))]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.PixelData = np.ascontiguousarray(volume.array[:, :, k].T).astype("<i2").tobytes()
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
        else:  # pydicom 2.x
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(folder / f"IM{k:04d}.dcm", write_like_original=False)
    return folder
