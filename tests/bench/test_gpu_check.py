"""The GPU check's parsing and extrapolation, and the whole script run on the CPU with a fake nvidia-smi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_report import _epochs_per_trial, asha_mean_epochs, efficiency_epochs_per_trial, extrapolate
from bench.pack import parse_smi, window_throughput

ROOT = Path(__file__).resolve().parents[2]


def test_parse_smi_reads_rows_and_skips_unavailable_values() -> None:
    text = "87, 10240\n[N/A], [N/A]\n\n 3 , 512 \nutilization.gpu, memory.used\n"
    assert parse_smi(text) == [(87.0, 10240.0), (3.0, 512.0)]


def test_asha_mean_epochs_follows_the_rungs() -> None:
    # rungs at 1 and 3 of 9: 2/3 stop after 1 epoch, 2/9 after 3, 1/9 train all 9
    assert asha_mean_epochs(9) == pytest.approx(2 / 3 + 3 * 2 / 9 + 9 / 9)
    assert asha_mean_epochs(1) == 1.0
    assert 3.0 < asha_mean_epochs(30) < 3.1


def test_epochs_per_trial_comes_from_the_efficiency_bench_when_it_ran(tmp_path: Path) -> None:
    # two seeds, 5 folds, max 6 epochs: trials of 1, 1, 3 and 6 epochs, then 1 and 6 epochs
    curves = {
        "0": [{"fold_epochs": 5}, {"fold_epochs": 10}, {"fold_epochs": 25}, {"fold_epochs": 55}],
        "1": [{"fold_epochs": 5}, {"fold_epochs": 35}],
    }
    data = {"settings": {"folds": 5, "max_epochs": 6}, "curves": {"tpe_asha": curves}}
    assert efficiency_epochs_per_trial(data) == (pytest.approx(18 / 6), 6)
    assert efficiency_epochs_per_trial({"settings": {"folds": 5, "max_epochs": 0}, "curves": {}}) is None
    epochs, source = _epochs_per_trial(tmp_path, 30)  # no efficiency.json: the arithmetic
    assert epochs == asha_mean_epochs(30) and "arithmetic" in source
    (tmp_path / "efficiency.json").write_text(json.dumps(data))
    epochs, source = _epochs_per_trial(tmp_path, 30)
    assert (
        epochs == pytest.approx(3.0 * asha_mean_epochs(30) / asha_mean_epochs(6)) and "efficiency" in source
    )
    elsewhere = tmp_path / "cpu" / "efficiency.json"  # --efficiency: a result of another machine
    elsewhere.parent.mkdir()
    data["curves"]["tpe_asha"] = {"0": [{"fold_epochs": 10 * i} for i in range(1, 7)]}  # 2 epochs a trial
    elsewhere.write_text(json.dumps(data))
    epochs, source = _epochs_per_trial(tmp_path, 30, elsewhere)
    assert (
        epochs == pytest.approx(2.0 * asha_mean_epochs(30) / asha_mean_epochs(6)) and "efficiency" in source
    )


def test_extrapolate_is_the_documented_arithmetic() -> None:
    rows = [
        {"backbone": "a", "px": 128, "precision": "bf16+channels_last", "img_per_s": 1000.0},
        {"backbone": "b", "px": 128, "precision": "bf16+channels_last", "img_per_s": 500.0},
        {"backbone": "a", "px": 128, "precision": "fp32", "img_per_s": 10.0},  # ignored: not the trainer's
    ]
    est = extrapolate(
        rows, budget=200, epochs_per_trial=3, folds=5, slices=300, setup_s=2.0, calibration=0.5, packing=2.0
    )
    images = 4 * 300 + 100
    trial_a = 3 * images / 500 + 2
    trial_b = 3 * images / 250 + 2
    assert est["trial_s_by_config"] == pytest.approx({"a@128": trial_a, "b@128": trial_b})
    assert est["budget_minutes"] == pytest.approx(200 * (trial_a + trial_b) / 2 / 2.0 / 60)


def test_window_throughput_counts_staggered_processes_conservatively() -> None:
    def proc(start: float, epochs: int) -> dict:
        return {
            "train_slices_per_epoch": 100,
            "history": [{"seconds": 1.0, "ended_at": start + i + 1} for i in range(epochs)],
        }

    # two processes of 3 one-second epochs, the second starting 1 s later: 4 counted epochs in 3 s
    out = window_throughput([proc(0.0, 3), proc(1.0, 3)])
    assert out["seconds"] == pytest.approx(3.0)
    assert out["img_per_s"] == pytest.approx(400 / 3)


@pytest.mark.slow
def test_gpu_check_script_runs_end_to_end_with_a_fake_nvidia_smi(tiny_cohort: Path, tmp_path: Path) -> None:
    """bench/gpu_check.sh at toy size on the CPU: every stage runs and the verdict reads the fake samples."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-L" ]; then echo "GPU 0: Fake"; else echo "57, 1234"; fi\n')
    fake.chmod(0o755)
    out = tmp_path / "results"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "NVIDIA_SMI": str(fake),
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_RESOLUTIONS": "32",
        "GPU_CHECK_FP32_AT": "32",
        "GPU_CHECK_BACKBONES": "tiny_cnn",
        "GPU_CHECK_PACK": "tiny_cnn 32 3",
        "GPU_CHECK_PROCS": "2",
        "GPU_CHECK_MANIFEST": str(tiny_cohort),
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "GPU 0: Fake" in proc.stdout and "--budget 200:" in proc.stdout
    verdict = json.loads((out / "gpu_check.json").read_text())
    assert verdict["verdict"]["gpu_util_%"] == pytest.approx(57.0)
    assert verdict["verdict"]["budget_200_minutes"] > 0
    pack = json.loads((out / "pack.json").read_text())
    assert pack["packed"]["processes"] == 2 and pack["packed"]["smi_samples"] >= 1
    rows = json.loads((out / "throughput.json").read_text())["rows"]
    assert [r["backbone"] for r in rows] == ["tiny_cnn"] and rows[0]["img_per_s"] > 0


def test_report_recomputed_elsewhere_keeps_the_gpu_machine(tmp_path: Path) -> None:
    """The H200 run's files, the report recomputed here with this machine's efficiency result: the verdict
    names the machine that measured, and where it was recomputed."""
    import shutil

    from bench import gpu_report

    results = ROOT / "bench" / "results"
    gpu = shutil.copytree(results / "Intel-R-Xeon-R-Processor__NVIDIA-H200", tmp_path / "gpu")
    assert (
        gpu_report.main(
            ["--results", str(gpu), "--efficiency", str(results / "AMD-EPYC" / "efficiency.json")]
        )
        == 0
    )
    verdict = json.loads((gpu / "gpu_check.json").read_text())
    assert verdict["machine"] == json.loads((gpu / "throughput.json").read_text())["machine"]
    assert verdict["machine"]["gpu"] == "NVIDIA H200" and "reported_on" in verdict
    assert "efficiency bench" in verdict["estimate"]["epochs_source"]
    with pytest.raises(SystemExit):
        gpu_report.main(["--results", str(gpu), "--efficiency", str(tmp_path / "missing.json")])
