"""The radiomics trials (`search.session.radiomics_trials`): with masks they search the feature set too."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.session.radiomics_trials import run_radiomics
from search.study import StudyPaths
from trainers.cv import prepare_cohort


@pytest.fixture(scope="module")
def prep(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    return prepare_cohort(tiny_cohort, folds=3, folds_path=tmp_path_factory.mktemp("r") / "folds.json")


def test_radiomics_trials_search_the_feature_sets(prep, tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = run_radiomics(paths, storage, "s", prep, n_trials=6, seed=0)
    configs = [t["config"] for t in trials.values()]
    assert [c["features"] for c in configs[:5]] == ["handmade"] * 3 + ["ibsi"] * 2  # the study points first
    assert all(("extraction" in t) == (t["config"]["features"] != "handmade") for t in trials.values())
    study = optuna.load_study(study_name="s-radiomics", storage=storage)
    assert len(study.trials) == 6 and {t.params["features"] for t in study.trials} <= {
        "handmade",
        "ibsi",
        "both",
    }
