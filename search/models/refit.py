"""The models a registration registers: the chosen trial's fold models, or the deep ensemble's members', each as
the trial kept them (`search.study.trial_models`) or trained again on the study's folds with the same seeds (on
the CPU the models the trial scored, up to float rounding), with the hold-out evaluated once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from search.models.model_card import cohort_facts
from search.registry.version_tags import operating_threshold
from search.study import StudyConfig, StudySettings, trial_config


class RegisterError(Exception):
    """A study that cannot be registered (no complete trial, changed cohort, ...)."""


def chosen_trial(study: Any, number: int | None = None) -> Any:
    """The trial to register: `number`, else the complete trial with the highest cv_auc."""
    from search.study import best_trial

    trial = best_trial(study, number)
    if trial is None and number is not None:
        raise RegisterError(f"trial {number} is not a complete trial of study {study.study_name}")
    if trial is None:
        raise RegisterError(f"study {study.study_name} has no complete trial yet")
    return trial


def evaluate_holdout(ensemble: Any, cohort: Any, patients: list[str], seed: int = 0) -> dict[str, Any]:
    """Winner's AUC on held-out patients with a bootstrap 95% CI, and its metrics at the ensemble's threshold."""
    import dataclasses

    import numpy as np

    from search.stats.sites import site_metrics
    from trainers.metrics import auc, bootstrap_auc_ci, patient_means, threshold_metrics
    from trainers.preprocess import load_lesions, load_rois

    wanted = set(patients)
    held = dataclasses.replace(cohort, scans=tuple(s for s in cohort.scans if s.patient_id in wanted))
    rois = load_rois(held, ensemble.params, progress=False)
    if hasattr(ensemble, "predict_lesions"):  # the radiomics model measures its features on the mask's ROI
        scores = ensemble.predict_lesions(rois, load_lesions(held, ensemble.params, progress=False))
    else:
        scores = ensemble.predict_rois(rois)
    ids, prob = patient_means([r.patient_id for r in rois], scores)
    labels = held.patient_labels()
    y = np.asarray([labels[p] for p in ids])
    lo, hi = bootstrap_auc_ci(y, prob, seed=seed)
    sites = {s.patient_id: s.site for s in held.scans if s.site}
    return {
        "auc": auc(y, prob),
        "ci_low": lo,
        "ci_high": hi,
        "n_patients": len(ids),
        **({"per_site": site_metrics(ids, y, prob, sites)} if sites else {}),
        **threshold_metrics(y, prob, ensemble.threshold),
        "predictions": [
            {"patient_id": p, "label": int(lab), "prob": float(pr)}
            for p, lab, pr in zip(ids, y, prob, strict=True)
        ],
    }


@dataclass
class Refit:
    """The chosen trial's fold models (kept by the trial, or trained again) and how they did."""

    name: str
    trial: Any
    config: StudyConfig
    cfg: Any
    result: Any
    ensemble: Any
    holdout: dict[str, Any] | None
    threshold_rule: str = "0.5"
    cohort: dict[str, Any] | None = None  # counts for the model card (search.models.model_card.cohort_facts)
    kind: str = "single"  # or "ensemble" (search.stats.candidates)
    members: list[dict[str, Any]] = field(default_factory=list)  # the ensemble's: {trial, weight, backbone}

    @property
    def cv_auc(self) -> float:
        """The pooled out-of-fold AUC the registered models were chosen on (a single trial's: its value)."""
        return float(self.trial.value if self.kind == "single" else self.result.cv_auc)

    @property
    def backbone(self) -> str:
        if self.kind == "radiomics":
            return "radiomics"
        if self.kind == "ensemble":
            return "+".join(dict.fromkeys(m["backbone"] for m in self.members))
        return self.cfg.backbone

    @property
    def train_params(self) -> dict[str, Any]:
        """What made the models: the trial's training config, or the radiomics model and its features."""
        if self.kind == "radiomics":
            from trainers import ibsi
            from trainers.feature_sets import DEFAULT_FEATURES

            classifier = dict(self.result.classifier or {"classifier": "logistic", "C": 1.0})
            feature_set = classifier.pop("features", DEFAULT_FEATURES)
            return {
                "model": self.result.model,
                "candidate": self.result.candidate,
                **classifier,
                "feature_set": feature_set,
                "features": len(self.result.features),
                "masks": self.result.masks,
                **({"extraction": json.dumps(ibsi.extraction())} if feature_set != DEFAULT_FEATURES else {}),
            }
        return self.cfg.to_dict()

    @property
    def run_name(self) -> str:
        return f"model-{self.kind}" if self.kind != "single" else f"model-trial-{self.trial.number:04d}"


@dataclass(frozen=True)
class HeldStudy:
    """What a search's driver already holds of its study at its end (its config, Optuna study and prepared
    inputs), handed to registration so that nothing is read again from disk."""

    config: StudyConfig
    study: Any
    inputs: Any


def _open(locations: Any, held: HeldStudy | None = None) -> tuple[str, Any, dict[str, Any], Any, Any]:
    """(name, paths, config, optuna study, study inputs) of the study to register: `held` when the search hands
    them over, else read from the study folder; RegisterError when unusable."""
    import optuna

    from search.study import StorageError, StudyFormatError
    from search.study.config import load_config
    from search.study.inputs import CohortChangedError, prepare_inputs

    name, paths = locations.require_study(), locations.paths
    if held is not None:
        return name, paths, held.config, held.study, held.inputs
    try:
        config = load_config(paths)
        study = optuna.load_study(study_name=name, storage=locations.open_storage())
        inputs = prepare_inputs(config, paths)
    except (StudyFormatError, CohortChangedError, StorageError) as exc:
        raise RegisterError(f"cannot refit study {name}: {exc}") from None
    return name, paths, config, study, inputs


def _fold_models(paths: Any, inputs: Any, settings: StudySettings, trial: Any, what: str, log: Any) -> tuple:
    """(cfg, result, models) of `trial`: the fold models it kept, else trained again (said with `what`)."""
    from search.study import trial_models
    from search.study.inputs import train_config
    from trainers.train import train_folds

    cfg = train_config(settings, trial_config(trial))
    kept, result, why_not = trial_models.load(paths, trial.number, cfg, trial.value)
    if kept is not None:
        log(
            f"{what}: {cfg.backbone}, cv_auc {trial.value:.3f}, with the {len(kept.models)} fold models the trial "
            f"trained (kept in {paths.models(trial.number)})"
        )
        return cfg, result, kept.models
    log(
        f"{what}: {cfg.backbone}, cv_auc {trial.value:.3f}; {why_not}: training its "
        f"{len(inputs.prepared.folds)} fold models again ..."
    )
    data = inputs.prepared.slice_data(cfg.resolution, cfg.channels)
    result, models = train_folds(data, inputs.prepared.folds, cfg, log=None)
    return cfg, result, models


def refit(
    locations: Any,
    trial_number: int | None,
    log: Any,
    members: list[dict[str, Any]] | None = None,
    held: HeldStudy | None = None,
) -> Refit:
    """The models to register: trial `trial_number`'s (None: the best complete trial's) k fold models, or with
    `members` ([{trial, weight}], the leaderboard's deep ensemble) every member's, combined as they were chosen;
    the hold-out evaluated once. `held`: the study as the search's driver holds it."""
    from trainers.ensemble import Ensemble
    from trainers.preprocess import PreprocessParams

    name, paths, config, study, inputs = _open(locations, held)
    settings = config.settings
    if members:
        return _refit_ensemble(name, paths, config, study, inputs, members, log)
    trial = chosen_trial(study, trial_number)
    what = f"registering trial {trial.number} of study {name}"
    cfg, result, models = _fold_models(paths, inputs, settings, trial, what, log)
    threshold, rule = operating_threshold(result.oof)  # why Youden's J: see search.registry.version_tags
    ensemble = Ensemble(models, cfg, PreprocessParams(), threshold)
    held = (
        evaluate_holdout(ensemble, inputs.cohort, inputs.holdout, settings.seed) if inputs.holdout else None
    )
    return Refit(
        name, trial, config, cfg, result, ensemble, held, rule, cohort_facts(inputs.cohort, inputs.holdout)
    )


@dataclass
class EnsembleResult:
    """The deep ensemble's cross-validation, as a single trial's result reads: its OOF table is the members'
    weighted mean."""

    cv_auc: float
    oof: list[dict[str, Any]]
    family: str = "ensemble"
    pretrained: bool = False


def _refit_ensemble(
    name: str,
    paths: Any,
    config: StudyConfig,
    study: Any,
    inputs: Any,
    members: list[dict[str, Any]],
    log: Any,
) -> Refit:
    """The deep ensemble: each member's fold models (kept or trained again), their OOF tables combined with the
    members' weights (the threshold is chosen on that), the hold-out evaluated once."""
    import numpy as np

    from search.stats.candidates import mixture
    from trainers.ensemble import Ensemble, WeightedEnsemble
    from trainers.metrics import auc
    from trainers.preprocess import PreprocessParams

    settings, parts, rows = config.settings, [], []
    log(f"registering the deep ensemble of study {name}: {len(members)} trials")
    for m in members:
        trial = chosen_trial(study, int(m["trial"]))
        cfg, result, models = _fold_models(
            paths, inputs, settings, trial, f"  member trial {trial.number}", log
        )
        parts.append((trial, cfg, result, Ensemble(models, cfg, PreprocessParams())))
        rows.append({r["patient_id"]: r for r in result.oof})
    patients = sorted(rows[0])
    weights = np.asarray([float(m["weight"]) for m in members])
    probs = np.asarray([[table[p]["prob"] for p in patients] for table in rows])
    mixed = mixture(weights, probs)[0]
    oof = [{**rows[0][p], "prob": float(v)} for p, v in zip(patients, mixed, strict=True)]
    labels = np.asarray([r["label"] for r in oof])
    result = EnsembleResult(auc(labels, mixed), oof, pretrained=any(r.pretrained for _, _, r, _ in parts))
    threshold, rule = operating_threshold(oof)
    ensemble = WeightedEnsemble([e for *_, e in parts], weights.tolist(), threshold)
    held = (
        evaluate_holdout(ensemble, inputs.cohort, inputs.holdout, settings.seed) if inputs.holdout else None
    )
    best, cfg = max(((t, c) for t, c, _, _ in parts), key=lambda tc: tc[0].value)
    listed = [
        {"trial": t.number, "weight": float(w), "backbone": c.backbone}
        for (t, c, _, _), w in zip(parts, weights, strict=True)
    ]
    return Refit(
        name,
        best,
        config,
        cfg,
        result,
        ensemble,
        held,
        rule,
        cohort_facts(inputs.cohort, inputs.holdout),
        kind="ensemble",
        members=listed,
    )


def refit_for(
    locations: Any,
    board: Any,
    trial_number: int | None,
    kind: str | None,
    log: Any,
    held: HeldStudy | None = None,
) -> Refit:
    """`refit` of the kind asked for (None: the one the search chose; a trial number: that single trial)."""
    from search.stats.study_candidates import registrable

    candidates = getattr(board, "candidates", None) or {}
    if kind == "radiomics" and trial_number is None:
        return refit_radiomics(locations, log, _radiomics_choice(candidates), held)
    if trial_number is not None:
        if kind in ("ensemble", "radiomics"):
            raise RegisterError(f"--trial names a single trial: it cannot be registered as --kind {kind}")
        return refit(locations, trial_number, log, held=held)
    kind = kind or registrable(candidates) or "single"
    if kind == "radiomics":
        return refit_radiomics(locations, log, _radiomics_choice(candidates), held)
    if kind == "single":
        return refit(locations, None, log, held=held)
    members = ((candidates.get("kinds") or {}).get("ensemble") or {}).get("members")
    if not members:
        raise RegisterError(
            "the study has no deep ensemble (it needs two complete trials and the search's leaderboard)"
        )
    return refit(locations, None, log, members, held)


@dataclass
class RadiomicsResult:
    """The radiomics model's cross-validation on the study's folds, as a trial's result reads."""

    cv_auc: float
    oof: list[dict[str, Any]]
    features: list[str]
    masks: bool
    candidate: str = "baseline"  # the radiomics trial (`r<n>`) or the baseline
    classifier: dict[str, Any] | None = (
        None  # its configuration (`spaces.radiomics_space`; None: the baseline's)
    )
    model: str = ""  # the classifier in words
    family: str = "radiomics"
    pretrained: bool = False


def _radiomics_choice(candidates: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(name, classifier config) of the radiomics candidate the search chose (the baseline's: config None)."""
    entry = (candidates.get("kinds") or {}).get("radiomics") or {}
    return str(entry.get("candidate", "baseline")), entry.get("config")


def refit_radiomics(
    locations: Any, log: Any, choice: tuple[str, dict[str, Any] | None], held: HeldStudy | None = None
) -> Refit:
    """The radiomics model's k fold models, fitted again on the study's folds from the cached features (seconds,
    deterministic: the models whose out-of-fold predictions the search scored), the hold-out evaluated once."""
    import numpy as np

    from search.stats.candidates_text import describe_classifier
    from trainers.metrics import auc
    from trainers.preprocess import PreprocessParams, load_lesions
    from trainers.radiomics_model import (
        FEATURE_WORDS,
        MODEL,
        RadiomicsEnsemble,
        cohort_table,
        features_of,
        fit_folds,
    )

    name, paths, config, study, inputs = _open(locations, held)
    prepared, settings = inputs.prepared, config.settings
    lesions = load_lesions(prepared.cohort, progress=False)
    candidate, classifier = choice
    what = describe_classifier(classifier) if classifier else MODEL
    try:
        features, patients, x, y, masks = cohort_table(features_of(classifier), prepared.rois, lesions)
        log(f"registering the radiomics model of study {name} ({candidate}): {what}, {len(features)} "
            f"{FEATURE_WORDS[features_of(classifier)]}, {len(prepared.folds)} fold models")  # fmt: skip
        models, oof = fit_folds(x, y, patients, prepared.folds, classifier)
    except ValueError as exc:
        raise RegisterError(f"cannot fit the radiomics model of study {name}: {exc}") from None
    result = RadiomicsResult(
        auc(np.asarray([r["label"] for r in oof]), np.asarray([r["prob"] for r in oof])),
        oof,
        features,
        masks,
        candidate,
        classifier,
        what,
    )
    threshold, rule = operating_threshold(oof)
    ensemble = RadiomicsEnsemble(models, features, masks, PreprocessParams(), threshold, classifier)
    held = (
        evaluate_holdout(ensemble, inputs.cohort, inputs.holdout, settings.seed) if inputs.holdout else None
    )
    best = chosen_trial(
        study
    )  # the search's best trial: the card and tags say what radiomics was chosen over
    return Refit(
        name,
        best,
        config,
        None,
        result,
        ensemble,
        held,
        rule,
        cohort_facts(inputs.cohort, inputs.holdout),
        kind="radiomics",
    )
