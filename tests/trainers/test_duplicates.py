"""One scan under two patient ids: exact copies (any file format) and near copies (a JPEG re-encode) found
from the decoded voxels while the manifest is validated."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from trainers.duplicates import (
    NEAR_CORRELATION,
    duplicate_problems,
    duplicate_warnings,
    fingerprint,
    load_checked,
)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open() as fh:
        return list(csv.DictReader(fh))


def _write(manifest: Path, rows: list[dict[str, str]]) -> Path:
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def copied_cohort(tiny_cohort: Path, folder: Path) -> tuple[Path, str, str]:
    """The tiny cohort plus patient COPY whose image is patient 0's scan saved again as an uncompressed NIfTI
    under another name (other bytes on disk, the same voxels); returns (manifest, original id, copy id)."""
    import nibabel as nib

    shutil.copytree(tiny_cohort.parent, folder)
    manifest = folder / tiny_cohort.name
    rows = _rows(manifest)
    first = rows[0]
    original = nib.load(folder / first["image"])
    nib.save(nib.Nifti1Image(np.asarray(original.dataobj, np.float32), original.affine), folder / "copy.nii")
    rows.append({**first, "patient_id": "COPY", "image": "copy.nii"})
    return _write(manifest, rows), first["patient_id"], "COPY"


def bitmap_cohort(tiny_cohort: Path, folder: Path) -> tuple[Path, str]:
    """Each tiny-cohort patient's middle slice as an 8-bit PNG, no masks, plus patient JPEG whose image is
    patient 0's PNG re-encoded as a JPEG at quality 75; returns (manifest, patient 0's id)."""
    from PIL import Image

    from trainers.io import load_image

    folder.mkdir()
    rows = []
    for row in _rows(tiny_cohort):
        volume = load_image(tiny_cohort.parent / row["image"]).array
        plane = volume[:, :, volume.shape[2] // 2]
        pixels = (255 * (plane - plane.min()) / (np.ptp(plane) or 1)).astype(np.uint8).T
        Image.fromarray(pixels).save(folder / f"{row['patient_id']}.png")
        rows.append(
            {"patient_id": row["patient_id"], "image": f"{row['patient_id']}.png", "label": row["label"]}
        )
    first = rows[0]
    Image.open(folder / first["image"]).save(folder / "reencoded.jpg", quality=75)
    rows.append({**first, "patient_id": "JPEG", "image": "reencoded.jpg"})
    return _write(folder / "manifest.csv", rows), first["patient_id"]


def test_an_exact_copy_under_another_id_is_one_group(tiny_cohort: Path, tmp_path: Path) -> None:
    manifest, original, copy = copied_cohort(tiny_cohort, tmp_path / "c")
    cohort, found = load_checked(manifest, folds=3)
    assert [[pid for pid, _ in group] for group in found.exact] == [sorted([original, copy])]
    assert found.near == []  # a pair in an exact group is not listed again as near
    problems = duplicate_problems(found, manifest.parent)
    assert f"{copy} (copy.nii)" in problems[0] and "under 2 patient ids" in problems[0]
    assert "--allow-duplicate-scans" in problems[-1]
    assert (
        "warning: searching with scans shared" in duplicate_warnings(found, manifest.parent, allowed=True)[0]
    )


def test_check_manifest_lists_a_copied_scan(tiny_cohort: Path, tmp_path: Path, capsys) -> None:
    from trainers.check_manifest import main

    manifest, original, copy = copied_cohort(tiny_cohort, tmp_path / "c")
    assert main([str(manifest), "--folds", "3"]) == 2
    assert f"under 2 patient ids: {copy} (copy.nii), {original} (" in capsys.readouterr().err
    assert main([str(tiny_cohort), "--folds", "3"]) == 0


def test_a_jpeg_re_encode_is_a_near_duplicate(tiny_cohort: Path, tmp_path: Path) -> None:
    manifest, original = bitmap_cohort(tiny_cohort, tmp_path / "b")
    _, found = load_checked(manifest, folds=3)
    assert found.exact == []
    assert [(a[0], b[0]) for a, b, _ in found.near] == [(original, "JPEG")]
    assert found.near[0][2] >= NEAR_CORRELATION
    (warning,) = duplicate_warnings(found, manifest.parent, allowed=False)
    assert f"{original} ({original}.png) and JPEG (reencoded.jpg)" in warning and "1 pair(s)" in warning


def test_fingerprint_is_of_the_voxels_not_the_bytes() -> None:
    rng = np.random.default_rng(0)
    scan = rng.normal(size=(40, 30, 5)).astype(np.float32)
    assert fingerprint(scan).digest == fingerprint(scan.astype(np.float64)).digest  # same decoded voxels
    assert fingerprint(scan).digest != fingerprint(scan.reshape(30, 40, 5)).digest  # the shape counts
    other = scan.copy()
    other[0, 0, 0] += 1
    assert fingerprint(scan).digest != fingerprint(other).digest
    noisy = scan + 0.01 * rng.normal(size=scan.shape).astype(np.float32)
    assert float(fingerprint(scan).thumbnail @ fingerprint(noisy).thumbnail) > NEAR_CORRELATION
    assert float(fingerprint(scan).thumbnail @ fingerprint(rng.normal(size=scan.shape)).thumbnail) < 0.5


@pytest.mark.slow
def test_the_default_phantom_has_no_duplicates() -> None:
    """The 112-patient phantom a search runs on without --manifest: no exact and no near copies."""
    from trainers.phantom import default_cohort

    manifest = default_cohort()
    start = time.perf_counter()
    cohort, found = load_checked(manifest)
    print(f"validated and fingerprinted {len(cohort.scans)} scans in {time.perf_counter() - start:.2f} s")
    assert len(cohort.scans) == 112
    assert found.exact == [] and found.near == []
