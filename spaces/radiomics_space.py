"""The radiomics space: scikit-learn classifiers on a study's lesion features (`trainers.radiomics_model`),
searched as cheap CPU trials beside the deep ones. Define-by-run, Optuna's trial API only, no computation.

With masks the features are searched too: the hand-made ones (`trainers.features`), PyRadiomics' IBSI-defined
ones (`trainers.ibsi`) or both side by side; without masks only the hand-made ROI features exist.
(`search.stats.candidates_text.describe_classifier` says a configuration in words.) `study_points` are each
classifier's reference configuration, run first (as the deep families' study points are): the logistic
regression on hand-made features is the study's baseline.
"""

from __future__ import annotations

from typing import Any

from trainers.feature_sets import DEFAULT_FEATURES, FEATURE_SETS

CLASSIFIERS = ("logistic", "random_forest", "hist_gb")
STUDY_POINTS: tuple[dict[str, Any], ...] = (
    {"classifier": "logistic", "C": 1.0, "features": "handmade"},
    {
        "classifier": "random_forest",
        "n_estimators": 200,
        "max_depth": 4,
        "min_samples_leaf": 2,
        "features": "handmade",
    },
    {"classifier": "hist_gb", "learning_rate": 0.1, "max_depth": 3, "max_iter": 100, "features": "handmade"},
)
#: with masks, the reference classifiers on the IBSI features as well
IBSI_POINTS: tuple[dict[str, Any], ...] = (
    {"classifier": "logistic", "C": 1.0, "features": "ibsi"},
    {
        "classifier": "random_forest",
        "n_estimators": 200,
        "max_depth": 4,
        "min_samples_leaf": 2,
        "features": "ibsi",
    },
)


def feature_sets(masks: bool) -> tuple[str, ...]:
    """The feature sets a cohort can use: all with a mask on every scan, else the hand-made ROI features."""
    return FEATURE_SETS if masks else (DEFAULT_FEATURES,)


def study_points(masks: bool) -> tuple[dict[str, Any], ...]:
    """The configurations run first, in order."""
    return STUDY_POINTS + (IBSI_POINTS if masks else ())


def space(trial: Any, masks: bool = True) -> dict[str, Any]:
    """One radiomics configuration: the classifier, its own hyperparameters and the features it reads."""
    classifier = trial.suggest_categorical("classifier", CLASSIFIERS)
    if classifier == "logistic":
        config: dict[str, Any] = {
            "classifier": classifier,
            "C": trial.suggest_float("C", 1e-3, 1e2, log=True),
        }
    elif classifier == "random_forest":
        config = {
            "classifier": classifier,
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 10),
        }
    else:
        config = {
            "classifier": classifier,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 6),
            "max_iter": trial.suggest_int("max_iter", 30, 300, log=True),
        }
    return {**config, "features": trial.suggest_categorical("features", feature_sets(masks))}
