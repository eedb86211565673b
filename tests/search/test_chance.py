"""A search on a phantom whose labels are permuted (nothing to learn): the corrected estimate must say so.

One local Ray session for the module; a tiny space, 20 patients, 1 epoch, 4 trials, no registration.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import ray

from search.commands.run import main
from search.study import default_tracking_uri
from tests.search.conftest import mlflow_runs, search_args


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def permuted_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-patient phantom with its labels shuffled across patients (same class balance, no link to the
    images), written as a second manifest beside the phantom's own."""
    from trainers.phantom import generate_cohort

    out = tmp_path_factory.mktemp("permuted")
    manifest = generate_cohort(out, patients=20, seed=5, matrix=48).manifest
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = [r["label"] for r in rows]
    shuffled = np.random.default_rng(0).permutation(labels)
    permuted = out / "permuted.csv"
    with permuted.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": str(y)} for r, y in zip(rows, shuffled, strict=True))
    assert sorted(shuffled) == sorted(labels) and list(shuffled) != labels
    return permuted


@pytest.mark.slow
def test_permuted_labels_give_an_interval_containing_chance(permuted_cohort, runs, capsys) -> None:
    args = search_args(
        permuted_cohort,
        runs,
        "chance",
        "--budget",
        "4",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "1",
        "--no-register",
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    print(out)  # the summary, for the record (pytest -s)

    board = json.loads((runs / "chance" / "leaderboard.json").read_text())
    low, high = board["corrected_auc_ci"]
    assert low < 0.5 < high and low <= board["corrected_auc"] <= high
    about = board["corrected"]
    assert about["n_resamples"] == 1000 and about["unit"] == "patient" and about["beats_chance"] is False
    assert about["configurations"] == 4 and about["excluded"] == [] and about["patients"] == 20
    assert about["best_cv_auc"] == board["rows"][0]["cv_auc"]

    assert f"corrected estimate {board['corrected_auc']:.3f} (95% CI {low:.3f}-{high:.3f}" in out
    assert "<- quote this" in out and "(optimistic: the best of 4 trials" in out
    assert "the search could not show that the winner beats chance" in out

    parent, _ = mlflow_runs(default_tracking_uri(runs), "chance")
    metrics = parent.data.metrics
    assert metrics["corrected_auc"] == pytest.approx(board["corrected_auc"])
    assert (metrics["corrected_auc_ci_low"], metrics["corrected_auc_ci_high"]) == pytest.approx((low, high))
