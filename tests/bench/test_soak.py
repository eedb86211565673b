"""bench.soak at small size: a real search with reused workers, watched; the short version of the 1,000-trial
soak, with its targets (no growth of worker memory, descriptors or processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.slow


def test_a_short_soak_meets_its_targets(tmp_path: Path) -> None:
    out = tmp_path / "results"
    rc = soak.main(["--trials", "60", "--early", "20", "--every", "2", "--check", "--out", str(out)])
    result = json.loads((out / "soak-60.json").read_text())
    summary = result["summary"]
    assert summary["end"]["trials"] >= 50 and len(summary["workers"]) >= 1, summary
    assert (out / "soak-60.png").stat().st_size > 0
    assert rc == 0, json.dumps(summary, indent=1)


def test_the_summary_reads_growth_from_the_samples() -> None:
    samples = [
        soak.Sample(
            t=float(i), trials=10 * i, driver_mb=100.0, driver_fds=10, children=5, driver_cpu_s=float(i)
        )
        for i in range(20)
    ]
    for i, s in enumerate(samples):  # a worker that grows by 30 % after trial 100
        s.workers = {1: 1000.0 + (300.0 if i >= 10 else 0.0)}
        s.worker_fds = {1: 20}
    summary = soak.summarise(samples, early=10, wall_s=20.0)
    assert summary["workers"][0]["growth"] == pytest.approx(0.3)
    assert summary["targets"] == {
        "worker_growth_within_10pct": False,
        "no_more_fds": True,
        "no_more_processes": True,
    }


def test_the_cpu_space_soak_runs_the_default_search_s_own_trials() -> None:
    cpu = soak.search_command(soak.build_parser().parse_args(["--space", "cpu", "--trials", "7"]), Path("r"))
    tiny = soak.search_command(soak.build_parser().parse_args(["--trials", "7"]), Path("r"))
    after = {flag: cpu[i + 1] for i, flag in enumerate(cpu[:-1]) if flag.startswith("--")}
    assert after["--space"] == "cpu" and after["--phantom-patients"] == "112" and after["--budget"] == "7"
    assert "--max-epochs" not in cpu and "--folds" not in cpu  # the space's own 8 epochs and 5 folds
    assert tiny[tiny.index("--max-epochs") + 1] == "1" and tiny[tiny.index("--phantom-patients") + 1] == "24"
