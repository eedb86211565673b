"""Every benchmark runs at toy size and writes its JSON (smoke runs: no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import augment, cache, throughput
from bench._common import command_line, machine_id, table


def test_machine_id_is_a_safe_folder_name() -> None:
    name = machine_id()
    assert name and "/" not in name and " " not in name


def test_table_lines_up_columns() -> None:
    text = table([{"a": 1.23456, "bb": "x"}, {"a": 12345.6, "bb": None}])
    lines = text.splitlines()
    assert (
        lines[0].split() == ["a", "bb"] and lines[2].split() == ["1.23", "x"] and lines[3].strip() == "12346"
    )


def test_throughput_smoke(tmp_path: Path) -> None:
    argv = [
        "--backbones",
        "tiny_cnn",
        "--resolutions",
        "32",
        "--patients",
        "10",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert throughput.main(argv) == 0
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["img_per_s"] > 0
    assert rows[0]["move_%"] + rows[0]["augment_%"] + rows[0]["step_%"] == pytest.approx(100)


def test_augment_smoke(tiny_cohort: Path, tmp_path: Path) -> None:
    argv = [
        "--manifest",
        str(tiny_cohort),
        "--backbone",
        "tiny_cnn",
        "--resolution",
        "32",
        "--folds",
        "3",
        "--runs",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert augment.main(argv) == 0
    result = json.loads((tmp_path / "augment.json").read_text())
    assert len(result["rows"]) == 2 and result["ratio"] > 0


def test_audit_hook_sees_a_scan_read(tmp_path: Path) -> None:
    """The cache bench's check can fail: reading a file under the cohort folder is caught."""
    scan = tmp_path / "cohort" / "P001.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"x")
    assert cache.files_opened_under(scan.parent, scan.read_bytes) == [str(scan)]
    assert cache.files_opened_under(scan.parent, lambda: None) == []


@pytest.mark.slow
def test_cache_smoke(tmp_path: Path) -> None:
    import os

    before = os.environ["STAGESEARCH_CACHE"]
    assert cache.main(["--patients", "10", "--folds", "2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert os.environ["STAGESEARCH_CACHE"] == before
    result = json.loads((tmp_path / "cache.json").read_text())
    assert result["trial_opened_scan_files"] == [] and result["speedup"] > 1


def test_recorded_command_names_the_module_and_leaves_out_local_folders() -> None:
    argv = ["/somewhere/bench/throughput.py", "--space", "paper", "--out", "/tmp/x", "--epochs=2"]
    assert command_line(argv) == "python -m bench.throughput --space paper --epochs=2"


@pytest.mark.slow
def test_overhead_smoke(tiny_cohort: Path, tmp_path: Path) -> None:
    """The same configuration directly and as a 2-trial search: both run and the split is written."""
    from bench import overhead

    argv = [
        "--manifest",
        str(tiny_cohort),
        "--space",
        "tiny",
        "--backbone",
        "tiny_cnn",
        "--resolution",
        "32",
        "--epochs",
        "1",
        "--folds",
        "3",
        "--trials",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert overhead.main(argv) == 0
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["search"]["trials"] == 2 and result["direct"]["epochs_sum_s"] > 0
    assert result["import_s"] > 0


def test_efficiency_curve_counts_only_complete_trials_and_finds_the_crossing() -> None:
    from bench.efficiency import best_at, curve, reach

    # (finished_at, fold-epochs, cv_auc of a complete trial or None for an early-stopped one), out of order
    c = curve([(3.0, 10, 0.7), (1.0, 5, None), (2.0, 40, 0.6), (4.0, 5, None)])
    assert [p["fold_epochs"] for p in c] == [5, 45, 55, 60]
    assert c[0]["best_cv_auc"] != c[0]["best_cv_auc"]  # NaN: nothing complete yet
    assert [p["best_cv_auc"] for p in c[1:]] == [0.6, 0.7, 0.7]
    assert reach(c, 0.65) == 55 and reach(c, 0.9) == float("inf")
    assert best_at(c, 50) == 0.6 and best_at(c, 4) != best_at(c, 4)

    # a search whose first trial was stopped early: its best is still the best complete trial's (not NaN)
    from bench.efficiency import ARMS, summarise

    fixed = curve([(0.0, 30, 0.65), (1.0, 30, 0.68)])
    rows, verdict = summarise(
        {"tpe_asha": {0: c}, "random_fifo": {0: curve([(0.0, 30, 0.66)])}, "seven_fixed": {0: fixed}}
    )
    best = {r["arm"]: r["median best cv_auc"] for r in rows}
    assert best == {"tpe_asha": 0.7, "random_fifo": 0.66, "seven_fixed": 0.68} and set(best) == set(ARMS)
    assert verdict["per_seed"]["tpe_asha"]["at_equal"] == [
        0.7
    ]  # reached at 55 of the fixed arm's 60 fold-epochs


@pytest.mark.slow
def test_efficiency_smoke(tiny_cohort: Path, tmp_path: Path) -> None:
    """Three arms for one seed at toy size: each arm has a curve, the table and the plot are written."""
    from bench import efficiency

    argv = [
        "--manifest",
        str(tiny_cohort),
        "--space",
        "tiny",
        "--seeds",
        "0",
        "--folds",
        "2",
        "--max-epochs",
        "1",
        "--tpe-budget",
        "2",
        "--random-budget",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert efficiency.main(argv) == 0
    result = json.loads((tmp_path / "efficiency.json").read_text())
    assert {r["arm"] for r in result["rows"]} == set(efficiency.ARMS)
    assert len(result["curves"]["tpe_asha"]["0"]) == 2 and len(result["curves"]["random_fifo"]["0"]) == 1
    assert (tmp_path / "efficiency.png").stat().st_size > 0


def test_eta_bench_compares_estimates_with_what_remained(tmp_path) -> None:
    """bench.eta reads the status lines of a log's last session; a line with no estimate or another session's
    line does not count; at a quarter (trial 5 of 20) 3m00s estimated against 4m00s that remained is -25 %."""
    from bench.eta import main as eta_main
    from bench.eta import seconds

    assert seconds("4m10s") == 250 and seconds("1h05m") == 3900
    old = "study s: 0 of 20 trials finished before this session\n[   5/20] complete 1 | best - | 9m00s ~1m00s left\n"
    lines = ["2026-01-01 INFO stagesearch.stdout: study s: 0 of 20 trials finished before this session"]
    for n, elapsed, left in (
        (2, "0m30s", "4m30s"),
        (5, "1m00s", "3m00s"),
        (10, "2m00s", "2m00s"),
        (15, "3m30s", "1m10s"),
        (20, "5m00s", None),
    ):
        eta = f" ~{left} left" if left else ""
        lines.append(
            f"2026-01-01 INFO stagesearch.stdout: [  {n:>2}/20] complete 1 pruned 0 failed 0 running 2 | "
            f"best cv_auc 0.700 (x, 32 px, lr 1.0e-03, aug 0.50) | {elapsed}{eta}"
        )
    log = tmp_path / "search.log"
    log.write_text(old + "\n".join(lines) + "\n")
    assert eta_main(["--log", str(log), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "eta.json").read_text())
    quarter = next(m for m in result["marks"] if m["share"] == "25%")
    assert (
        quarter["finished"] == 5 and quarter["remained_s"] == 240 and quarter["error"] == pytest.approx(-0.25)
    )
    assert result["verdict"]["met"] and result["verdict"]["total_s"] == 300
    log.write_text("\n".join(lines[:-1]) + "\n")  # the session never finished its budget
    assert eta_main(["--log", str(log), "--out", str(tmp_path / "out")]) == 2
    # replayed: at 5 finished (1 a line before: 2 at 30 s, 5 at 60 s) below 10 trials the rate since the start,
    # 60 s / 5 * 15 left = 180 s; at 10 finished (2 min), the later half's rate: (120 - 60) / 5 * 10 = 120 s
    log.write_text(old + "\n".join(lines) + "\n")
    assert eta_main(["--log", str(log), "--replay", "--out", str(tmp_path / "out")]) == 0
    replayed = json.loads((tmp_path / "out" / "eta-replay.json").read_text())
    by_share = {m["share"]: m for m in replayed["marks"]}
    assert by_share["25%"]["estimate_s"] == pytest.approx(180) and by_share["50%"][
        "estimate_s"
    ] == pytest.approx(120)
