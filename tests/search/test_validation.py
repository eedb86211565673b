"""Bad flags or a bad manifest: a clear message, exit code 2, and nothing written anywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from search.commands.run import main
from tests.search.conftest import ROOT


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--budget", "0"], "--budget"),
        (["--folds", "1"], "--folds"),
        (["--gpus-per-trial", "1.5"], "--gpus-per-trial"),
        (["--address", "not an address"], "--address"),
        (["--max-retries", "-1"], "--max-retries"),
        (["--storage", "optuna.db"], "--storage"),
        (["--study", "bad/name"], "--study"),
        (["--resume"], "--resume"),
    ],
)
def test_bad_flags_exit_2(flags, needle, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["--runs-dir", str(runs), "--space", "tiny", *flags]) == 2
    assert needle in capsys.readouterr().err
    assert not runs.exists()


def test_bad_manifest_exit_2_nothing_written(tmp_path) -> None:
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("patient_id,image,mask,label\nP001,missing.nii.gz,,T1\nP002,missing2.nii.gz,,T3\n")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "search" / "run.py"),
            "--manifest",
            str(manifest),
            "--runs-dir",
            str(runs),
            "--space",
            "tiny",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "P001" in proc.stderr and "P002" in proc.stderr
    assert not runs.exists() and not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_help_explains() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for flag in (
        "--budget",
        "--space",
        "--manifest",
        "--resume",
        "--gpus-per-trial",
        "--address",
        "--tracking-uri",
    ):
        assert flag in proc.stdout
    assert "default: 200" in proc.stdout
