"""End to end: a tiny cohort cross-validated with a tiny backbone for one epoch, API and CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from trainers.config import TrainConfig
from trainers.cv import prepare_cohort
from trainers.metrics import auc
from trainers.train import cross_validate


def test_cross_validate_one_epoch(tiny_cohort, tmp_path) -> None:
    prepared = prepare_cohort(tiny_cohort, folds=3, folds_path=tmp_path / "folds.json")
    data = prepared.slice_data(32, 1)
    cfg = TrainConfig(
        backbone="tiny_cnn", epochs=1, resolution=32, batch_size=8, aug_strength=0.5, device="cpu"
    )
    reports = []
    result = cross_validate(data, prepared.folds, cfg, on_epoch=reports.append, log=None)
    assert len(reports) == 1 and result.epochs_completed == 1
    assert len(result.fold_auc) == 3
    oof = result.oof
    assert sorted(r["patient_id"] for r in oof) == sorted(prepared.cohort.patients)  # each patient once
    y = np.array([r["label"] for r in oof])
    p = np.array([r["prob"] for r in oof])
    assert result.cv_auc == auc(y, p)
    for r in oof:  # out-of-fold: validated by the fold that did not train on it
        assert r["patient_id"] in prepared.folds[r["fold"]]["val"]
    assert {"accuracy", "precision", "recall", "f1", "f1_youden"} <= set(result.metrics)
    assert result.pretrained is False


def test_on_epoch_can_stop_early(tiny_cohort, tmp_path) -> None:
    prepared = prepare_cohort(tiny_cohort, folds=2, folds_path=tmp_path / "folds.json")
    cfg = TrainConfig(backbone="tiny_cnn", epochs=3, resolution=32, batch_size=8, device="cpu")
    result = cross_validate(prepared.slice_data(32), prepared.folds, cfg, on_epoch=lambda r: True, log=None)
    assert result.epochs_completed == 1


def test_cli_writes_summary(tiny_cohort, tmp_path) -> None:
    out = tmp_path / "cv.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.cv",
            "--manifest",
            str(tiny_cohort),
            "--backbone",
            "tiny_cnn",
            "--epochs",
            "1",
            "--resolution",
            "32",
            "--folds",
            "3",
            "--json",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cv_auc" in proc.stdout and "fold" in proc.stdout
    summary = json.loads(out.read_text())
    assert len(summary["fold_auc"]) == 3 and len(summary["oof"]) == 12
    assert summary["cohort_hash"] and summary["folds"]


def test_cli_bad_flag_exits_2(tiny_cohort) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.cv", "--manifest", str(tiny_cohort), "--backbone", "nonesuch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "nonesuch" in proc.stderr


def test_cpu_training_is_bit_for_bit_deterministic(tiny_cohort, tmp_path) -> None:
    """Same seed, same config: identical losses, fold AUCs and out-of-fold probabilities (augmentation on)."""
    prepared = prepare_cohort(tiny_cohort, folds=2, folds_path=tmp_path / "folds.json")
    data = prepared.slice_data(32, 3)
    cfg = TrainConfig(
        backbone="tiny_cnn", epochs=2, resolution=32, channels=3, batch_size=4, aug_strength=1.0, device="cpu"
    )

    def run(config: TrainConfig) -> tuple[list, list]:
        result = cross_validate(data, prepared.folds, config, log=None)
        return [h["train_loss"] for h in result.history], [r["prob"] for r in result.oof]

    first, second = run(cfg), run(cfg)
    assert first == second
    other = run(TrainConfig(**{**cfg.to_dict(), "seed": 1}))
    assert other[0] != first[0]
