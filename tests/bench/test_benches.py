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
    argv = ["--backbones", "tiny_cnn", "--resolutions", "32", "--patients", "10", "--epochs", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert throughput.main(argv) == 0
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["img_per_s"] > 0
    assert rows[0]["move_%"] + rows[0]["augment_%"] + rows[0]["step_%"] == pytest.approx(100)


def test_augment_smoke(tiny_cohort: Path, tmp_path: Path) -> None:
    argv = ["--manifest", str(tiny_cohort), "--backbone", "tiny_cnn", "--resolution", "32", "--folds", "3",
            "--runs", "1", "--out", str(tmp_path)]  # fmt: skip
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

    argv = ["--manifest", str(tiny_cohort), "--space", "tiny", "--backbone", "tiny_cnn", "--resolution", "32",
            "--epochs", "1", "--folds", "3", "--trials", "2", "--out", str(tmp_path)]  # fmt: skip
    assert overhead.main(argv) == 0
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["search"]["trials"] == 2 and result["direct"]["epochs_sum_s"] > 0
    assert result["import_s"] > 0
