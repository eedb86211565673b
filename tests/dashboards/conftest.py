"""The one real tiny study the dashboards' tests share, made once a session (a search: about a minute)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import ray

from search.commands.run import main as search_main
from tests.search.conftest import ROOT, search_args

STUDY = "dash"


@pytest.fixture(scope="session")
def runs(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-trial study with 3 held-out patients and its registered winner (winner.json)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    folder = tmp_path_factory.mktemp("dashboards") / "runs"
    try:
        args = search_args(
            tiny_cohort,
            folder,
            STUDY,
            "--budget",
            "4",
            "--scheduler",
            "fifo",
            "--max-epochs",
            "2",
            "--cpus-per-trial",
            "1",
            "--holdout",
            "0.25",
            "--force-small-holdout",
        )
        assert search_main(args) == 0
    finally:
        ray.shutdown()
    return folder


def load_dash_study(runs: Path) -> optuna.Study:
    """The shared study, read back with Optuna's own API from the storage its config.json names."""
    storage = json.loads((runs / STUDY / "config.json").read_text())["storage"]
    return optuna.load_study(study_name=STUDY, storage=storage)


def run_script(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python dashboards/NAME ARGS...`, run to the end."""
    return subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
    )
