"""Radiomics candidates: scikit-learn classifiers on the study's lesion features (hand-made, PyRadiomics' IBSI
features, or both, with masks; the hand-made ROI features without), searched by Optuna (TPE, seeded) as cheap
CPU trials in the driver after the deep search, `--radiomics-trials` of them (not taken from `--budget`), each
classifier's study point first (`spaces.radiomics_space`).

They live in the study's Optuna storage as a sibling study, `<study>-radiomics` (browsable beside it in
optuna-dashboard): a deep trial always has a backbone, and keeping the two apart leaves the deep sampler's
space, the budget and every per-backbone view as they are. Features are read once from the preprocessing cache
(no trial reads a scan; the IBSI features are measured once per scan into the feature cache); each trial is
scored on exactly the study's folds and writes an out-of-fold table, `radiomics/<n>/oof.csv`, with its
configuration (and, for IBSI features, the extraction settings) beside it, so the nested selection
(`search.stats.study_candidates`) compares them with the deep candidates. A later session of the study runs
only the trials still missing.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import optuna

from search.study import StudyPaths, read_radiomics, write_json, write_oof
from spaces.radiomics_space import space, study_points
from trainers import ibsi
from trainers.cv import PreparedCohort
from trainers.feature_sets import DEFAULT_FEATURES, FEATURE_WORDS, features_of
from trainers.metrics import auc
from trainers.preprocess import load_lesions
from trainers.radiomics_model import cohort_table, fit_folds

SUFFIX = "-radiomics"
DEFAULT_TRIALS = 20


def run_radiomics(
    paths: StudyPaths,
    storage: Any,
    study_name: str,
    prepared: PreparedCohort,
    n_trials: int,
    seed: int,
) -> dict[int, dict[str, Any]]:
    """Run the radiomics trials still missing (up to `n_trials` complete in all); the trials there are now."""
    done = read_radiomics(paths)
    if n_trials <= 0 or len(done) >= n_trials:
        return done
    start = time.perf_counter()
    tables = FeatureTables(prepared)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = study_points(tables.masks)
    study = optuna.create_study(
        study_name=study_name + SUFFIX,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(points) + 2),
        load_if_exists=True,
    )
    study.set_metric_names(["cv_auc"])  # optuna-dashboard names the objective as the deep study's
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for point in points[len(complete) : n_trials]:  # no more queued than will run
        study.enqueue_trial(dict(point), skip_if_exists=True)
    for _ in range(n_trials - len(complete)):
        trial = study.ask()
        config = space(trial, tables.masks)
        t0 = time.perf_counter()
        _, patients, x, y = tables.get(features_of(config))
        _, oof = fit_folds(x, y, patients, prepared.folds, config)
        value = auc(np.asarray([r["label"] for r in oof]), np.asarray([r["prob"] for r in oof]))
        if not math.isfinite(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        where = paths.radiomics(trial.number)
        write_oof(where / "oof.csv", oof, epoch=0)
        record = {"config": config, "cv_auc": value, "seconds": round(time.perf_counter() - t0, 3)}
        if features_of(config) != DEFAULT_FEATURES:
            record["extraction"] = ibsi.extraction()
        write_json(where / "trial.json", {**record, "n_features": x.shape[1]})
        study.tell(trial, value)
    trials = read_radiomics(paths)
    print(
        f"radiomics: {len(trials)} trials of {n_trials} ({tables.described()}) "
        f"({time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    return trials


class FeatureTables:
    """The study's feature tables, each made the first time a trial asks for it (the IBSI features come from
    the feature cache, measured there once per scan)."""

    def __init__(self, prepared: PreparedCohort) -> None:
        self.rois, self.lesions = prepared.rois, load_lesions(prepared.cohort, progress=False)
        self.masks = bool(self.lesions) and all(les.has_mask for les in self.lesions)
        self.tables: dict[str, tuple[list[str], list[str], np.ndarray, np.ndarray]] = {}

    def get(self, feature_set: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """(names, patients, features, labels) of `feature_set`."""
        if feature_set not in self.tables:
            names, patients, x, y, _ = cohort_table(feature_set, self.rois, self.lesions)
            self.tables[feature_set] = (names, patients, x, y)
        return self.tables[feature_set]

    def described(self) -> str:
        """The feature sets the trials read: "20 hand-made features; 103 IBSI features (PyRadiomics); ..."."""
        return (
            "; ".join(f"{len(t[0])} {FEATURE_WORDS[name]}" for name, t in self.tables.items())
            or "no features"
        )
