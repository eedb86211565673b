"""A study's stored config turned into what training needs: cohort, hold-out, folds, and the fixed settings.

The search and the refit of its winner both go through here, so the refit trains on exactly what the trial
was scored on (same cohort hash, hold-out, folds and fixed settings). It needs the trainers (torch), so the
`search.study` package does not import it. In a pseudonymised study this is where patient ids become
pseudonyms (`search.study.pseudonyms`): everything after it (Ray, the trials, MLflow, the refit, the report)
gets the inputs with pseudonyms only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.study.config import StudyConfig, StudySettings
from search.study.folder import StudyPaths, read_json
from search.study.pseudonyms import study_pseudonyms
from spaces import get_space
from spaces.base import Space
from trainers.config import TrainConfig
from trainers.cv import PreparedCohort, prepare_cohort
from trainers.folds import load_or_make_holdout
from trainers.manifest import Cohort, load_manifest
from trainers.preprocess import PREPROCESS_VERSION


class CohortChangedError(Exception):
    """The study's manifest no longer describes the cohort the study was made on."""


class PreprocessChangedError(CohortChangedError):
    """The study's trials were scored on ROI slices made by another preprocessing version than this one makes,
    so continuing it or refitting its winner would mix inputs (handled wherever a changed cohort is)."""


def check_preprocess_version(config: StudyConfig, name: str) -> None:
    """Raise PreprocessChangedError, saying what to do, when `config` was made with another preprocessing."""
    made = config.preprocess_version  # studies from before it was recorded: 1
    if made != PREPROCESS_VERSION:
        raise PreprocessChangedError(
            f"study {name!r} was made with preprocessing version {made}, but this stagesearch preprocesses scans "
            f"with version {PREPROCESS_VERSION} (docs/cohort.md, Preprocessing), so its trials were scored on other "
            "inputs than new trials or a refit would get; start a new study (a new --study name, or none), or "
            "continue or register this one with the stagesearch release that made it"
        )


@dataclass(frozen=True)
class StudyInputs:
    """Everything trials share: the whole cohort, its held-out patients, and the rest prepared with its folds.

    In a pseudonymised study every patient id in here (cohort, hold-out, folds, ROI slices) is a pseudonym.
    """

    cohort: Cohort
    holdout: list[str]
    prepared: PreparedCohort


def load_cohort(config: StudyConfig) -> Cohort:
    """The study's cohort from its stored manifest path (raises ManifestError)."""
    settings = config.settings
    return load_manifest(config.manifest_path, folds=int(settings.folds), cv_group=str(settings.cv_group))


def prepare_inputs(
    config: StudyConfig,
    paths: StudyPaths,
    cohort: Cohort | None = None,
    log: Callable[[str], None] | None = None,
) -> StudyInputs:
    """Hold-out (written once), folds (written once) and cached ROI slices of the study's cohort.

    Raises CohortChangedError when the manifest's files no longer hash to the study's cohort (or
    PreprocessChangedError, one, when the study was made with another preprocessing version), and
    `pseudonyms.SaltError` when a pseudonymised study's salt is missing or replaced. Hold-out and folds are
    drawn on the real ids either way, so pseudonymising changes the names only.
    """
    settings = config.settings
    check_preprocess_version(config, paths.name)
    cohort = cohort or load_cohort(config)
    if cohort.content_hash() != config.cohort_hash:
        raise CohortChangedError(
            f"study {paths.name!r} was made on cohort {config.cohort_hash}, but {config.manifest_path} is "
            f"now {cohort.content_hash()} (changed files?); start a new --study"
        )
    rename = study_pseudonyms(config, paths, cohort.patients)
    holdout: list[str] = []
    if settings.holdout:
        by_site = settings.cv_group == "site"  # whole sites held out, as the site-grouped folds claim to test
        holdout = load_or_make_holdout(
            paths.holdout,
            cohort.patient_labels(),
            float(settings.holdout),
            int(settings.seed),
            config.cohort_hash,
            rename,
            cohort.patient_groups("site") if by_site else None,
            int(settings.folds),
        )
        if log:
            sites = f" of site(s) {', '.join(read_json(paths.holdout).get('sites', []))}" if by_site else ""
            log(
                f"held out {len(holdout)} patients{sites} for the final test ({paths.holdout}); no trial sees them"
            )
    real_ids = {v: k for k, v in rename.items()} if rename is not None else {}
    prepared = prepare_cohort(
        config.manifest_path,
        int(settings.folds),
        int(settings.seed),
        str(settings.cv_group),
        paths.folds,
        cohort=cohort,
        exclude=[real_ids.get(p, p) for p in holdout],
        rename=rename,
    )
    if rename is not None:
        cohort = cohort.renamed(rename)
        if log:
            log(f"patient ids pseudonymised (salt in {paths.salt}, which stays in the study folder)")
    return StudyInputs(cohort, holdout, prepared)


def study_space(settings: StudySettings) -> Space:
    """The study's search space, narrowed to its recorded backbones and resolutions (ValueError naming a flag)."""
    return get_space(str(settings.space)).narrowed(settings.backbones, settings.resolutions)


def fixed_settings(settings: StudySettings, num_threads: int | None = None) -> dict[str, Any]:
    """Training settings every trial of the study shares (the space samples the rest)."""
    fixed = {
        "epochs": int(settings.max_epochs),
        "seed": int(settings.seed),
        "pretrained": bool(settings.pretrained),
        "device": "auto",
    }
    if num_threads is not None:
        fixed["num_threads"] = num_threads
    return fixed


def train_config(settings: StudySettings, params: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: the study's fixed settings plus the trial's sampled parameters."""
    return TrainConfig.from_dict({**fixed_settings(settings), **params})
