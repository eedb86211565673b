"""Fractional GPUs: four trials on two (logical) GPUs at half a GPU each, more than two at once, at most two per GPU,
each seeing only its own."""

from __future__ import annotations

import json

import pytest
import ray

from search.commands.run import main
from tests.search.conftest import search_args


@pytest.fixture(scope="module", autouse=True)
def ray_with_two_gpus():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_four_trials_two_per_gpu(tiny_cohort, runs) -> None:
    args = search_args(
        tiny_cohort,
        runs,
        "gpu",
        "--budget",
        "4",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "4",
        "--gpus-per-trial",
        "0.5",
        "--cpus-per-trial",
        "0.5",
    )
    assert main(args) == 0
    results = []
    for path in (runs / "gpu" / "ray").rglob("result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results.append(
            {
                "gpu": lines[0]["gpu_ids"],
                "cvd": lines[0]["cuda_visible_devices"],
                "start": lines[0]["started_at"],
                "end": lines[-1]["reported_at"],
            }
        )
    assert len(results) == 4
    # Which GPU a trial gets depends on which trial ended first (Ray fills the freed half), so both GPUs are
    # used but not necessarily two trials each.
    assert {r["gpu"] for r in results} == {"0", "1"}, results
    for r in results:
        assert r["cvd"] == r["gpu"]  # each trial sees only the GPU it was given

    # Trials on the tiny cohort last a second or two, so whether all four overlap is a matter of timing; what
    # fractional GPUs make possible, and whole GPUs not, is more than two trials at once and a GPU holding two.
    def running_at(t: float, on: list[dict]) -> int:
        return sum(r["start"] <= t < r["end"] for r in on)

    peak = max(running_at(r["start"], results) for r in results)
    shared = [
        gpu
        for gpu in ("0", "1")
        if max(running_at(r["start"], [q for q in results if q["gpu"] == gpu]) for r in results) >= 2
    ]
    assert peak >= 3 and shared, f"no GPU held two trials at once: {results}"
    for gpu in ("0", "1"):  # and never more than its two halves
        on = [q for q in results if q["gpu"] == gpu]
        assert max(running_at(r["start"], on) for r in on) <= 2, f"GPU {gpu} held more than two: {results}"
