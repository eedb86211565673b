"""Tests for trainers.manifest: every bad input is reported, all at once, naming patient and problem."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from trainers.check_manifest import main
from trainers.manifest import Cohort, ManifestError, load_manifest

COLUMNS = ["patient_id", "image", "mask", "label", "site"]
SHAPE = (16, 16, 4)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Write a NIfTI file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)


def _blob() -> np.ndarray:
    """A small non-empty uint8 mask blob in the middle of the volume."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:10, 6:11, 1:3] = 1
    return mask


def make_cohort(root: Path, per_class: int = 5, sites: int = 5) -> list[dict[str, str]]:
    """Write per_class T1 and T2 patients (image + blob mask) under root; return manifest rows (relative)."""
    rng = np.random.default_rng(0)
    rows = []
    for n in range(2 * per_class):
        pid = f"P{n + 1:03d}"
        _save(root / "images" / f"{pid}.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        _save(root / "masks" / f"{pid}.nii.gz", _blob())
        label = "T1" if n % 2 == 0 else "T2"
        site = f"S{n % sites}"
        rows.append(
            {
                "patient_id": pid,
                "image": f"images/{pid}.nii.gz",
                "mask": f"masks/{pid}.nii.gz",
                "label": label,
            }
        )
        rows[-1]["site"] = site
    return rows


def write_manifest(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    """Write rows as a CSV with the given columns (default: all of COLUMNS)."""
    columns = columns or COLUMNS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _problems(manifest: Path, **kwargs: object) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, **kwargs)
    return info.value


def _row(rows: list[dict[str, str]], pid: str) -> dict[str, str]:
    return next(r for r in rows if r["patient_id"] == pid)


# ---------------------------------------------------------------- one bad input at a time
# Each case mutates a good 10-patient cohort and returns (columns, load_manifest kwargs).

Case = Callable[[Path, list], tuple]


def _missing_image(root, rows):
    (root / "images" / "P003.nii.gz").unlink()
    return None, {}


def _garbage_image(root, rows):
    (root / "images" / "P003.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 40))
    return None, {}


def _truncated_image(root, rows):
    path = root / "images" / "P003.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return None, {}


def _header_promises_more(root, rows):
    path = root / "images" / "P003.nii.gz"
    img = nib.load(path)
    img.header.set_data_shape((4096, 4096, 64))  # 1 G voxels promised, 1 K held
    raw = img.header.binaryblock + b"\0" * 4 + np.asarray(img.dataobj, np.float32).tobytes()
    path.write_bytes(gzip.compress(raw))
    return None, {}


def _missing_mask(root, rows):
    (root / "masks" / "P003.nii.gz").unlink()
    return None, {}


def _mask_shape(root, rows):
    _save(root / "masks" / "P003.nii.gz", np.ones((16, 16, 3), np.uint8))
    return None, {}


def _mask_geometry(root, rows):
    affine = np.eye(4)
    affine[:3, 3] = [0.0, 0.0, 2.5]
    _save(root / "masks" / "P003.nii.gz", _blob(), affine)
    return None, {}


def _empty_mask(root, rows):
    _save(root / "masks" / "P003.nii.gz", np.zeros(SHAPE, np.uint8))
    return None, {}


def _image_4d(root, rows):
    _save(root / "images" / "P003.nii.gz", np.ones((*SHAPE, 2), np.float32))
    return None, {}


def _nan_image(root, rows):
    data = np.ones(SHAPE, np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    _save(root / "images" / "P003.nii.gz", data)
    return None, {}


def _unknown_label(root, rows):
    _row(rows, "P003")["label"] = "T3"
    return None, {}


def _conflicting_labels(root, rows):
    extra = dict(_row(rows, "P003"), label="T2", image="images/P003b.nii.gz")
    _save(root / "images" / "P003b.nii.gz", np.ones(SHAPE, np.float32))
    rows.append(extra)
    return None, {}


def _shared_image(root, rows):
    _row(rows, "P004")["image"] = "images/P003.nii.gz"
    return None, {}


def _blank_site(root, rows):
    _row(rows, "P003")["site"] = ""
    return None, {"cv_group": "site"}


BAD_CASES = {
    "missing image": (_missing_image, "patient P003", "image file not found: images/P003.nii.gz"),
    "unreadable image": (_garbage_image, "patient P003", "not a valid NIfTI"),
    "truncated archive": (_truncated_image, "patient P003", "truncated or corrupt gzip"),
    "header promises more": (_header_promises_more, "patient P003", "header promises"),
    "missing mask": (_missing_mask, "patient P003", "mask file not found: masks/P003.nii.gz"),
    "mask shape": (_mask_shape, "patient P003", "shape (16, 16, 3) does not match image shape (16, 16, 4)"),
    "mask geometry": (_mask_geometry, "patient P003", "geometry (affine) does not match image"),
    "empty mask": (_empty_mask, "patient P003", "empty mask"),
    "4D image": (_image_4d, "patient P003", "4D image (shape (16, 16, 4, 2)) where a 3D volume is expected"),
    "NaN/inf voxels": (_nan_image, "patient P003", "2 NaN/inf voxel"),
    "unknown label": (_unknown_label, "patient P003", "unknown label 'T3'; allowed: T1, T2, 0, 1"),
    "conflicting labels": (_conflicting_labels, "patient P003", "conflicting labels across rows: T1"),
    "shared image": (_shared_image, "patient P004", "images/P003.nii.gz is listed 2 times"),
    "blank site": (_blank_site, "patient P003", "blank site"),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_each_bad_input_is_reported_with_patient_and_reason(tmp_path: Path, case: str) -> None:
    mutate, who, what = BAD_CASES[case]
    rows = make_cohort(tmp_path)
    columns, kwargs = mutate(tmp_path, rows)
    err = _problems(write_manifest(tmp_path / "manifest.csv", rows, columns), **kwargs)
    assert len(err.problems) == 1, err.problems
    assert who in err.problems[0] and what in err.problems[0], err.problems[0]
    assert str(err).startswith(f"manifest {tmp_path / 'manifest.csv'}: 1 problem:\n  - ")


@pytest.mark.parametrize(
    ("change", "kwargs", "expected"),
    [
        ("drop_label_column", {}, ["missing required column(s): label"]),
        ("blank_patient_id", {}, ["row 4: blank patient_id"]),
        ("all_t1", {}, ["only one class: all 10 patients are T1"]),
        ("none", {"folds": 6}, ["too few patients per class for 6-fold CV: T1 has 5, T2 has 5"]),
        ("drop_site_column", {"cv_group": "site"}, ["missing column 'site', required for cv_group='site'"]),
        (
            "two_sites",
            {"cv_group": "site"},
            ["only 2 distinct site(s) (S0, S1) for 5-fold CV grouped by site"],
        ),
    ],
)
def test_column_and_cohort_level_problems(
    tmp_path: Path, change: str, kwargs: dict, expected: list[str]
) -> None:
    rows = make_cohort(tmp_path)
    columns = None
    if change == "drop_label_column":
        columns = ["patient_id", "image", "mask", "site"]
    elif change == "blank_patient_id":
        rows[2]["patient_id"] = ""
    elif change == "all_t1":
        for r in rows:
            r["label"] = "t1"
    elif change == "drop_site_column":
        columns = ["patient_id", "image", "mask", "label"]
    elif change == "two_sites":
        for n, r in enumerate(rows):
            r["site"] = f"S{n % 2}"
    err = _problems(write_manifest(tmp_path / "m.csv", rows, columns), **kwargs)
    assert len(err.problems) == len(expected), err.problems
    for got, want in zip(err.problems, expected, strict=True):
        assert want in got


def test_missing_or_non_csv_manifest(tmp_path: Path) -> None:
    assert "manifest file not found" in str(_problems(tmp_path / "absent.csv"))
    (tmp_path / "bin.csv").write_bytes(gzip.compress(b"\x00\xff" * 100))
    assert "not a text CSV file" in str(_problems(tmp_path / "bin.csv"))
    (tmp_path / "semi.csv").write_text("patient_id;image;label\nP001;a.nii.gz;T1\n")
    assert "does not look comma-separated" in str(_problems(tmp_path / "semi.csv"))
    (tmp_path / "empty.csv").write_text("")
    assert "manifest is empty" in str(_problems(tmp_path / "empty.csv"))


def test_several_problems_come_back_in_one_error_and_cli_exits_2(tmp_path: Path) -> None:
    rows = make_cohort(tmp_path)
    (tmp_path / "images" / "P002.nii.gz").unlink()
    _row(rows, "P005")["label"] = "t2x"
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    err = _problems(manifest)
    assert len(err.problems) == 2
    assert "patient P002" in err.problems[0] and "image file not found" in err.problems[0]
    assert "patient P005" in err.problems[1] and "unknown label 't2x'" in err.problems[1]
    assert "2 problems" in str(err)
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.check_manifest", str(manifest), "--folds", "5"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "patient P002" in proc.stderr and "patient P005" in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------- good manifests


def test_good_manifest_with_mixed_label_spellings_blank_mask_site_and_extra_column(tmp_path: Path) -> None:
    rows = make_cohort(tmp_path)
    spellings = {"P001": " t1 ", "P002": "1", "P003": "0", "P004": "T2"}
    for pid, label in spellings.items():
        _row(rows, pid)["label"] = label
    _row(rows, "P006")["mask"] = ""
    _save(tmp_path / "images" / "P001_b.nii.gz", np.ones(SHAPE, np.float32))
    rows.insert(1, dict(_row(rows, "P001"), image="images/P001_b.nii.gz", mask=""))  # second scan of P001
    for r in rows:
        r["notes"] = "free text, ignored"
    cohort = load_manifest(write_manifest(tmp_path / "m.csv", rows, [*COLUMNS, "notes"]))
    assert isinstance(cohort, Cohort)
    assert len(cohort.scans) == 11
    assert cohort.patients == [f"P{n:03d}" for n in range(1, 11)]
    labels = cohort.patient_labels()
    assert (labels["P001"], labels["P002"], labels["P003"], labels["P004"]) == (0, 1, 0, 1)
    assert sum(labels.values()) == 5
    scan = next(s for s in cohort.scans if s.patient_id == "P006")
    assert scan.mask is None and scan.site == "S0"
    assert cohort.patient_groups() == {p: p for p in cohort.patients}
    assert cohort.patient_groups("site")["P007"] == "S1"
    assert main([str(tmp_path / "m.csv")]) == 0


def test_cli_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_manifest(tmp_path / "m.csv", make_cohort(tmp_path))
    assert main([str(tmp_path / "m.csv"), "--folds", "3", "--cv-group", "site"]) == 0
    out = capsys.readouterr().out
    assert "patients: 10 (T1: 5, T2: 5)" in out and "masks:    10 of 10" in out and "sites:    5" in out


def test_relative_paths_resolve_against_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_cohort(tmp_path / "data")
    for r in rows:
        r["image"] = "../data/" + r["image"]
        r["mask"] = str(tmp_path / "data" / r["mask"])  # absolute paths stay as they are
    manifest = write_manifest(tmp_path / "lists" / "m.csv", rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cohort = load_manifest(os.path.relpath(manifest, elsewhere))
    assert cohort.scans[0].image == tmp_path / "data" / "images" / "P001.nii.gz"
    assert cohort.scans[0].mask == tmp_path / "data" / "masks" / "P001.nii.gz"
    assert cohort.manifest == manifest


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_content_hash_tracks_file_changes_and_loading_writes_nothing(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", make_cohort(tmp_path))
    before = _snapshot(tmp_path)
    first = load_manifest(manifest).content_hash()
    assert _snapshot(tmp_path) == before
    assert len(first) == 16 and int(first, 16) >= 0
    assert load_manifest(manifest).content_hash() == first
    image = tmp_path / "images" / "P004.nii.gz"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touch
    touched = load_manifest(manifest).content_hash()
    assert touched != first
    _save(image, np.zeros((16, 16, 5), np.float32))  # rewrite (mask no longer matches, so skip reading)
    assert load_manifest(manifest, check_images=False).content_hash() not in (first, touched)


def test_content_hash_covers_files_inside_a_series_folder(tmp_path: Path) -> None:
    rows = make_cohort(tmp_path)
    series = tmp_path / "dicom" / "P001"
    series.mkdir(parents=True)
    (series / "IM0001").write_bytes(b"slice one")
    _row(rows, "P001")["image"] = "dicom/P001"
    cohort = load_manifest(write_manifest(tmp_path / "m.csv", rows), check_images=False)
    first = cohort.content_hash()
    (series / "IM0002").write_bytes(b"slice two")
    assert cohort.content_hash() != first


def test_broken_image_does_not_hide_a_broken_mask(tmp_path: Path) -> None:
    rows = make_cohort(tmp_path)
    _image_4d(tmp_path, rows)
    _empty_mask(tmp_path, rows)
    err = _problems(write_manifest(tmp_path / "m.csv", rows))
    assert len(err.problems) == 2, err.problems
    assert "4D image" in err.problems[0] and "empty mask" in err.problems[1]
    assert all("patient P003" in p for p in err.problems)
