"""Tests for the phantom MRI cohort: determinism, layout, label model, shortcut resistance, caching, CLI."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainers import phantom
from trainers.phantom import (
    DEFAULT_LABEL_NOISE,
    PhantomSummary,
    default_cohort,
    draw_latents_and_labels,
    generate_cohort,
    render_patient,
)

REPO = Path(__file__).resolve().parents[2]


def _rows(root: Path, name: str = "manifest.csv") -> list[dict[str, str]]:
    """Rows of a cohort CSV as dictionaries."""
    with open(root / name, newline="") as fh:
        return list(csv.DictReader(fh))


def _load(root: Path, rel: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """Array, affine and image object of one NIfTI file of a cohort."""
    img = nib.load(root / rel)
    return np.asanyarray(img.dataobj), img.affine, img


def _body_z(x: np.ndarray) -> np.ndarray:
    """Image z-scored over the body (voxels above a fifth of the 99th percentile)."""
    x = x.astype(np.float64)
    body = x > 0.2 * np.percentile(x, 99)
    return (x - x[body].mean()) / x[body].std()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PhantomSummary]:
    """A 16-patient cohort at matrix 48, shared by the layout tests."""
    root = tmp_path_factory.mktemp("small")
    return root, generate_cohort(root, patients=16, seed=0, matrix=48)


def test_determinism_same_seed_same_data_other_seed_differs(small, tmp_path: Path) -> None:
    root, _ = small
    again = generate_cohort(tmp_path / "again", patients=16, seed=0, matrix=48)
    other = generate_cohort(tmp_path / "other", patients=4, seed=1, matrix=48)
    for name in ("manifest.csv", "oracle.csv"):
        assert (root / name).read_bytes() == (again.manifest.parent / name).read_bytes()
    for row in _rows(root):
        for key in ("image", "mask"):
            a, aff_a, _ = _load(root, row[key])
            b, aff_b, _ = _load(again.manifest.parent, row[key])
            assert a.dtype == b.dtype and np.array_equal(a, b) and np.array_equal(aff_a, aff_b)
    assert _rows(root, "oracle.csv")[:4] != _rows(other.manifest.parent, "oracle.csv")
    for row in _rows(other.manifest.parent):
        a, aff_a, _ = _load(root, row["image"])
        b, aff_b, _ = _load(other.manifest.parent, row["image"])
        assert a.shape != b.shape or not np.array_equal(a, b) or not np.array_equal(aff_a, aff_b)


def test_files_manifest_and_geometry(small) -> None:
    root, summary = small
    rows = _rows(root)
    assert summary.manifest == root / "manifest.csv"
    assert list(rows[0]) == ["patient_id", "image", "mask", "label", "site"]
    assert [r["patient_id"] for r in rows] == [f"P{i:03d}" for i in range(1, 17)]
    assert {r["label"] for r in rows} == {"T1", "T2"}
    assert {r["site"] for r in rows} <= {"siteA", "siteB", "siteC"} and len({r["site"] for r in rows}) >= 2
    assert summary.n_t1 == sum(r["label"] == "T1" for r in rows) and summary.n_t1 + summary.n_t2 == 16
    affines, ratios = [], []
    for r in rows:
        assert not Path(r["image"]).is_absolute() and r["image"] == f"images/{r['patient_id']}_t2.nii.gz"
        assert r["mask"] == f"masks/{r['patient_id']}_mask.nii.gz"
        image, affine, img = _load(root, r["image"])
        mask, mask_affine, _ = _load(root, r["mask"])
        assert image.ndim == 3 and image.shape == mask.shape and np.allclose(affine, mask_affine)
        assert image.dtype == np.int16 and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert mask.sum() >= 5 and image.max() > 100
        assert int(img.header["qform_code"]) > 0 and int(img.header["sform_code"]) > 0
        zooms = np.linalg.norm(affine[:3, :3], axis=0)
        assert np.allclose(zooms, img.header.get_zooms(), rtol=1e-4)
        slice_axis = int(np.argmax(zooms))
        assert 16 <= image.shape[slice_axis] <= 28 and 3.4 <= zooms[slice_axis] <= 5.1
        assert all(0.8 * 48 <= n <= 1.2 * 48 for k, n in enumerate(image.shape) if k != slice_axis)
        affines.append(affine)
        ratios.append(zooms.max() / zooms.min())
    assert min(ratios) > 1.5  # anisotropic at matrix 48 (about 5x at the default matrix)
    assert len({nib.aff2axcodes(a) for a in affines}) >= 2
    assert len({tuple(np.round(a, 3).ravel()) for a in affines}) == len(affines)


def test_affines_are_true(small) -> None:
    """Sampled through its affine, each volume matches the cohort's anatomy better than its mirror images."""
    root, _ = small
    world = np.stack(np.meshgrid(*(np.arange(-h, h + 1, 3.0) for h in (24, 30, 21)), indexing="ij"))
    samples = []
    for r in _rows(root):
        image, affine, _ = _load(root, r["image"])
        inv = np.linalg.inv(affine)
        ijk = np.rint(np.tensordot(inv[:3, :3], world, 1) + inv[:3, 3].reshape(3, 1, 1, 1)).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(image.shape).reshape(3, 1, 1, 1)), axis=0)
        s = np.full(inside.shape, np.nan)
        s[inside] = _body_z(image)[tuple(c[inside] for c in ijk)]
        samples.append(s)
    samples = np.array(samples)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        ok = ~np.isnan(a) & ~np.isnan(b)
        return float(np.corrcoef(a[ok], b[ok])[0, 1])

    near = np.abs(world[0]) <= 9
    anterior = near & (world[1] >= 15) & (np.abs(world[2]) <= 9)  # bladder side
    posterior = near & (world[1] <= -15) & (np.abs(world[2]) <= 9)  # rectum side
    for i, s in enumerate(samples):
        assert np.nanmean(s[anterior]) > np.nanmean(s[posterior]) + 0.1
        template = np.nanmean(np.delete(samples, i, axis=0), axis=0)
        native = corr(s, template)
        assert native > 0.3
        assert native > corr(s[:, ::-1], template) + 0.02  # anterior-posterior mirror
        assert native > corr(s[:, :, ::-1], template) + 0.02  # superior-inferior mirror


def test_oracle_auc_of_defaults_and_label_model(small) -> None:
    latent, labels = draw_latents_and_labels(112, 0, DEFAULT_LABEL_NOISE)
    auc = phantom.roc_auc(latent, labels)
    assert auc == pytest.approx(roc_auc_score(labels, latent))
    assert 0.85 <= auc <= 0.95
    assert 0.4 <= labels.mean() <= 0.6
    assert phantom.roc_auc(*draw_latents_and_labels(112, 0, 0.0)) == 1.0
    assert phantom.roc_auc(*draw_latents_and_labels(112, 0, 2.0)) < auc - 0.1
    root, summary = small
    oracle = _rows(root, "oracle.csv")
    lat16, lab16 = draw_latents_and_labels(16, 0, DEFAULT_LABEL_NOISE)
    assert np.allclose([float(o["latent"]) for o in oracle], lat16, atol=1e-6)
    assert np.array_equal(lab16, labels[:16]) and np.allclose(lat16, latent[:16])  # prefix-stable stream
    assert [int(o["label"]) for o in oracle] == lab16.tolist()
    assert [r["label"] for r in _rows(root)] == ["T2" if y else "T1" for y in lab16]
    assert summary.oracle_auc == pytest.approx(roc_auc_score(lab16, lat16))


def test_invasion_changes_shape_not_size() -> None:
    for index in range(6):
        masks = {}
        for latent in (-2.0, 2.0):
            _, mask, affine, _ = render_patient(3, index, latent, 48)
            pts = np.argwhere(mask > 0) @ affine[:3, :3].T
            spread = np.sqrt(np.linalg.eigvalsh(np.cov((pts - pts.mean(0)).T))[-1])
            masks[latent] = (len(pts) * abs(np.linalg.det(affine[:3, :3])), spread)
        assert masks[2.0][1] > masks[-2.0][1] + 1.0  # a breaching tumour reaches further
        assert 0.4 < masks[2.0][0] / masks[-2.0][0] < 2.5  # at a roughly kept volume


def test_histogram_baseline_is_far_below_oracle(tmp_path: Path) -> None:
    """Tumour intensity histograms, tumour size and brightness do not give the stage away."""
    summary = generate_cohort(tmp_path, patients=112, seed=0, matrix=48)
    root, rows = tmp_path, _rows(tmp_path)
    labels = np.array([r["label"] == "T2" for r in rows], dtype=int)
    hists, volumes, means = [], [], []
    for r in rows:
        image, affine, _ = _load(root, r["image"])
        mask, _, _ = _load(root, r["mask"])
        tumour = _body_z(image)[mask > 0]
        hists.append(np.histogram(tumour, bins=32, range=(-3.0, 3.0))[0] / len(tumour))
        volumes.append(mask.sum() * abs(np.linalg.det(affine[:3, :3])))
        means.append(tumour.mean())
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    proba = cross_val_predict(model, np.array(hists), labels, cv=cv, method="predict_proba")[:, 1]
    hist_auc = roc_auc_score(labels, proba)
    vol_auc, mean_auc = roc_auc_score(labels, volumes), roc_auc_score(labels, means)
    print(f"oracle AUC {summary.oracle_auc:.3f}, histogram AUC {hist_auc:.3f}, ", end="")
    print(f"volume AUC {vol_auc:.3f}, mean-intensity AUC {mean_auc:.3f}")
    assert 0.85 <= summary.oracle_auc <= 0.95
    assert hist_auc <= summary.oracle_auc - 0.10
    assert abs(vol_auc - 0.5) < 0.12 and abs(mean_auc - 0.5) < 0.12


def test_default_cohort_generates_once_then_reuses(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STAGESEARCH_CACHE", str(tmp_path))
    first = default_cohort(patients=4, seed=0, matrix=32)
    assert "generating phantom cohort" in capsys.readouterr().out
    assert first.is_file() and first.parent.parent == tmp_path and first.parent.name.startswith("phantom-")
    assert len(_rows(first.parent)) == 4 and (first.parent / _rows(first.parent)[0]["image"]).is_file()
    mtime = first.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("cached cohort was regenerated")

    monkeypatch.setattr(phantom, "generate_cohort", refuse)
    assert default_cohort(patients=4, seed=0, matrix=32) == first and first.stat().st_mtime_ns == mtime
    assert "generating" not in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # no temporary folder left
    with pytest.raises(AssertionError):  # other parameters: another folder, so it must generate
        default_cohort(patients=5, seed=0, matrix=32)
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # the failed try left nothing behind


def test_cli_prints_oracle_auc(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "trainers.phantom", "--out", str(out), "--patients", "8", "--matrix", "48"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = re.search(r"oracle AUC=([0-9.]+)", done.stdout)
    assert found and "T1=" in done.stdout and "T2=" in done.stdout
    oracle = _rows(out, "oracle.csv")
    expected = roc_auc_score([int(o["label"]) for o in oracle], [float(o["latent"]) for o in oracle])
    assert float(found.group(1)) == pytest.approx(expected, abs=1e-3)
    assert len(_rows(out)) == 8
    helptext = subprocess.run(
        [*cmd[:3], "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    assert "--label-noise" in helptext and f"default: {DEFAULT_LABEL_NOISE}" in helptext
