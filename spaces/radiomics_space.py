"""The radiomics space: scikit-learn classifiers on a study's hand-made lesion features (`trainers.radiomics_model`),
searched as cheap CPU trials beside the deep ones. Define-by-run, Optuna's trial API only, no computation.

(`search.stats.candidates_text.describe_classifier` says a configuration in words.) `STUDY_POINTS` are each classifier's reference configuration, run first (as the deep families' study points are):
the logistic regression one is the study's baseline.
"""

from __future__ import annotations

from typing import Any

CLASSIFIERS = ("logistic", "random_forest", "hist_gb")
STUDY_POINTS: tuple[dict[str, Any], ...] = (
    {"classifier": "logistic", "C": 1.0},
    {"classifier": "random_forest", "n_estimators": 200, "max_depth": 4, "min_samples_leaf": 2},
    {"classifier": "hist_gb", "learning_rate": 0.1, "max_depth": 3, "max_iter": 100},
)


def space(trial: Any) -> dict[str, Any]:
    """One radiomics configuration: the classifier and its own hyperparameters."""
    classifier = trial.suggest_categorical("classifier", CLASSIFIERS)
    if classifier == "logistic":
        return {"classifier": classifier, "C": trial.suggest_float("C", 1e-3, 1e2, log=True)}
    if classifier == "random_forest":
        return {
            "classifier": classifier,
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 10),
        }
    return {
        "classifier": classifier,
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 6),
        "max_iter": trial.suggest_int("max_iter", 30, 300, log=True),
    }
