"""Fractional GPUs: four trials on two (logical) GPUs, two per GPU and more than two at once, each seeing only its
own."""

from __future__ import annotations

import json
from collections import Counter

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
    assert Counter(r["gpu"] for r in results) == {"0": 2, "1": 2}
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
