"""Before a search starts: flags and the stored study checked, the space and cohort chosen, `config.json` written.

Every problem a user can cause ends here as a `UserError` (exit code 2) before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from search.session.driver_lock import StudyBusyError, hold
from search.session.options import comparison_problems, resolve_settings, validate
from search.study import (
    FORMAT_VERSION,
    STORAGE_ENV,
    TRACKING_ENV,
    StorageError,
    StudyFormatError,
    StudyPaths,
    default_storage_url,
    default_tracking_uri,
    latest_study,
    open_storage,
    public,
    public_argv,
    read_json,
    sqlite_path,
    warn_if_on_command_line,
)
from search.study.config import (
    StudyConfig,
    StudySettings,
    load_config,
    search_settings,
    software_versions,
    write_config,
)
from search.study.pseudonyms import (
    SaltError,
    new_salt,
    pseudonyms,
    read_salt,
    salt_check,
    write_salt,
)
from spaces.base import Space


class UserError(Exception):
    """Problems with the flags, the stored study or the cohort, each a message naming what to fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


#: Fewer held-out patients of a class than this and the hold-out AUC's CI is too wide to test anything.
MIN_HOLDOUT_PER_CLASS = 10


def hanley_mcneil_half_width(n_pos: int, n_neg: int, auc: float = 0.75) -> float:
    """Half-width of the 95% CI of an AUC of `auc` on n_pos T2 / n_neg T1 patients, from the Hanley & McNeil
    (Radiology, 1982) standard error: what a hold-out of that size can resolve at a plausible AUC of 0.75."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return 1.96 * var**0.5


def small_holdout_problem(fraction: float, held: Counter, force: bool) -> str | None:
    """Refusal (or, forced, a warning printed here) for a hold-out with fewer than 10 patients of a class."""
    n_neg, n_pos = held[0], held[1]
    if min(n_neg, n_pos) >= MIN_HOLDOUT_PER_CLASS or not min(n_neg, n_pos):
        return None
    text = (
        f"--holdout {fraction}: the hold-out would have T1 {n_neg} / T2 {n_pos} patients (fewer than "
        f"{MIN_HOLDOUT_PER_CLASS} of a class): its AUC's 95% CI would be about +/-{hanley_mcneil_half_width(n_pos, n_neg):.2f} "
        "wide (Hanley-McNeil SE at AUC 0.75), too wide to tell a model from chance"
    )
    if force:
        print(f"warning: {text}", flush=True)
        return None
    return f"{text}; hold out more patients, or pass --force-small-holdout"


def holdout_problems(
    cohort: Any, fraction: float, folds: int, seed: int, cv_group: str = "patient", force_small: bool = False
) -> list[str]:
    """A held-out split must keep both classes there, at least 10 patients per class unless forced, and enough
    patients per class for the folds; grouped by site, it holds out whole sites and leaves at least `folds`
    sites to search on."""
    from trainers.folds import split_holdout

    labels = cohort.patient_labels()
    sites = cohort.patient_groups("site") if cv_group == "site" else None
    try:
        held = set(split_holdout(labels, fraction, seed, sites, folds))
    except ValueError as exc:
        return [f"--holdout {fraction}" + (" with --cv-group site" if sites else "") + f": {exc}"]
    kept = Counter(v for p, v in labels.items() if p not in held)
    out = Counter(labels[p] for p in held)
    problems = []
    if len(out) < 2:
        problems.append(
            f"--holdout {fraction}: the held-out set would have a single class ({len(held)} patients)"
        )
    small = small_holdout_problem(fraction, out, force_small)
    if small:
        problems.append(small)
    if min(kept[0], kept[1]) < folds:
        problems.append(
            f"--holdout {fraction}: leaves T1 {kept[0]} / T2 {kept[1]} patients for {folds} folds"
        )
    return problems


def local_gpus() -> int:
    """CUDA devices this machine shows."""
    import torch

    return torch.cuda.device_count()


def stored_config(args: argparse.Namespace) -> StudyConfig | None:
    """The config of the study to continue (None for a new one); fills `args.study` for a bare --resume."""
    if args.resume and not args.study:
        args.study = latest_study(args.runs_dir)
        if args.study is None:
            raise UserError([f"--resume: no study in {args.runs_dir} to continue"])
    paths = StudyPaths(args.runs_dir / args.study) if args.study else None
    try:
        stored = load_config(paths) if paths and read_json(paths.config) else None
    except StudyFormatError as exc:
        raise UserError([str(exc)]) from None
    if args.resume and stored is None:
        raise UserError([f"--resume: no study named {args.study!r} in {args.runs_dir}"])
    if stored is not None:
        if stored.format < FORMAT_VERSION:
            _upgrade_settings(stored.settings)
            print(
                f"note: study folder {paths.root} has format {stored.format}; continuing it as format "
                f"{FORMAT_VERSION} (its earlier trials keep their out-of-fold tables in MLflow only)",
                flush=True,
            )
        _check_preprocessing(stored, args.study)  # a study from before --pseudonymise reads as not (real ids)
    return stored


def _check_preprocessing(stored: StudyConfig, study: str) -> None:
    """A study made with another preprocessing version cannot be continued (its trials saw other inputs)."""
    from search.study.inputs import PreprocessChangedError, check_preprocess_version

    try:
        check_preprocess_version(stored, study)
    except PreprocessChangedError as exc:
        raise UserError([str(exc)]) from None


def _upgrade_settings(settings: StudySettings) -> None:
    """Format 1 had no --backbones/--resolutions: such a study searched all of its space's."""
    from spaces import get_space

    if settings.space and settings.backbones is None:
        space = get_space(settings.space)
        settings.backbones, settings.resolutions = list(space.backbones), list(space.resolutions)


def choose_space(args: argparse.Namespace, settings: StudySettings, resumed: bool) -> Space:
    """The study's search space, narrowed by --backbones/--resolutions (fills those settings, the space's name
    and max_epochs), and one line saying why."""
    from search.study.inputs import study_space

    gpus = (args.num_gpus if args.num_gpus is not None else local_gpus()) if args.address is None else None
    if settings.space is None:
        settings.space = "paper" if (gpus or args.address) else "cpu"
        why = f"{gpus} GPU(s) visible" if gpus else ("Ray cluster" if args.address else "no GPU visible")
    else:
        why = "resumed study" if resumed else "chosen with --space"
    try:
        space = study_space(settings)
    except ValueError as exc:
        raise UserError([str(exc)]) from None
    settings.backbones, settings.resolutions = list(space.backbones), list(space.resolutions)
    if settings.max_epochs is None:
        settings.max_epochs = space.max_epochs
    print(
        f"search space: {settings.space} ({why}): {space.description}; {settings.max_epochs} epochs max",
        flush=True,
    )
    return space


def fetch_pretrained_weights(names: list[str]) -> None:
    """Make the space's ImageNet weights local once, in the driver, before any trial (trials read the caches
    only, so no two download the same file); say once which backbones start from random initialisation."""
    from trainers.pretrained import resolve_weights

    for line in resolve_weights(names, log=lambda line: print(line, flush=True)).notes():
        print(line, flush=True)


def load_cohort(
    settings: StudySettings, stored: StudyConfig | None, study: str | None, force_small_holdout: bool = False
) -> tuple[Path, Any]:
    """The manifest (or the phantom's) and its validated cohort, checked against the hold-out and the stored study."""
    from trainers.cv import resolve_manifest
    from trainers.duplicates import checked_manifest
    from trainers.manifest import ManifestError

    try:
        manifest = resolve_manifest(settings.manifest, settings.phantom_patients, 0)
        cohort = checked_manifest(
            manifest, settings.folds, settings.cv_group, allow=settings.allow_duplicate_scans
        )
    except ManifestError as exc:
        raise UserError([str(exc)]) from None
    if settings.holdout:
        # a resumed study's hold-out was accepted when the study was made: only the folds are checked again
        problems = holdout_problems(
            cohort,
            float(settings.holdout),
            settings.folds,
            settings.seed,
            settings.cv_group,
            force_small=force_small_holdout or stored is not None,
        )
        if problems:
            raise UserError(problems)
    chash = cohort.content_hash()
    if stored is not None and stored.cohort_hash != chash:
        raise UserError(
            [
                f"study {study!r} was made on cohort {stored.cohort_hash}, but {manifest} "
                f"is now {chash} (changed files?); start a new --study"
            ]
        )
    return Path(manifest), cohort


def study_config(
    args: argparse.Namespace,
    argv: list[str] | None,
    settings: StudySettings,
    stored: StudyConfig | None,
    manifest: Path,
    cohort: Any,
) -> tuple[StudyConfig, StudyPaths]:
    """The study's `config.json` (this session appended to its sessions) and its folder."""
    # search.tune.tuning imports Ray: here, once search.tune.local_ray has set it up, not when this module is
    # imported
    from search.tune.tuning import startup_trials
    from trainers.preprocess import PREPROCESS_VERSION

    name = args.study or f"{settings.space}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = StudyPaths(args.runs_dir / name)
    argv = public_argv(sys.argv[1:] if argv is None else argv)  # passwords as *** (search.study.locations)
    session = {
        "argv": argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "software": software_versions(),
        "search": search_settings(args, int(settings.max_epochs or 0), startup_trials(args.budget)),
    }
    # A new study goes to STAGESEARCH_STORAGE when set (the URL with its password never on a command line).
    before = stored or StudyConfig(name, format=FORMAT_VERSION)
    storage = args.storage or before.storage or os.environ.get(STORAGE_ENV) or default_storage_url(paths)
    upgraded = before.upgraded_from_format or before.format
    config = StudyConfig(
        study=name,
        settings=settings,
        manifest_path=str(manifest.resolve()),
        cohort_hash=cohort.content_hash(),
        preprocess_version=PREPROCESS_VERSION,
        patients=len(cohort.patients),
        storage=public(storage),
        tracking_uri=public(args.tracking_uri or before.tracking_uri or default_tracking_uri(args.runs_dir)),
        sessions=[*before.sessions, session],
        format=FORMAT_VERSION,
        upgraded_from_format=upgraded if upgraded != FORMAT_VERSION else None,
        pseudonym_salt_check=before.pseudonym_salt_check,
        extra=before.extra,
    )
    return config, paths


def study_salt(config: StudyConfig, paths: StudyPaths, stored: StudyConfig | None, cohort: Any) -> str | None:
    """A pseudonymised study's salt: the stored one when resuming (UserError when it is missing or replaced),
    a new one for a new study (the caller writes its file). Its check value, never the salt, goes into `config`.
    """
    if not config.settings.pseudonymise:
        return None
    try:
        salt = read_salt(paths, stored) if stored is not None else new_salt()
        pseudonyms(
            salt, cohort.patients
        )  # a collision, however unlikely, is refused before anything is written
    except SaltError as exc:
        raise UserError([str(exc)]) from None
    config.pseudonym_salt_check = salt_check(salt)
    return salt


def configure(args: argparse.Namespace, argv: list[str] | None) -> tuple[StudyConfig, StudyPaths, Any]:
    """Check everything, then write the study's config.json; returns (config, folder, cohort). Raises UserError."""
    problems = validate(args)
    if problems:
        raise UserError(problems)
    warn_if_on_command_line("--storage", args.storage, STORAGE_ENV)
    warn_if_on_command_line("--tracking-uri", args.tracking_uri, TRACKING_ENV)
    stored = stored_config(args)
    settings, problems = resolve_settings(args, stored.settings if stored is not None else None)
    if problems:
        raise UserError(problems)
    space = choose_space(args, settings, stored is not None)
    if stored is None and (problems := comparison_problems(args, len(space.backbones), space.name)):
        raise UserError(problems)  # a resumed study ran (or queued) its comparison when it was created
    manifest, cohort = load_cohort(settings, stored, args.study, args.force_small_holdout)
    config, paths = study_config(args, argv, settings, stored, manifest, cohort)
    if sqlite_path(config.storage) is None:  # a database server: does it let us in? (before writing anything)
        try:
            open_storage(config.storage).engine.dispose()
        except StorageError as exc:
            raise UserError([str(exc)]) from None
    try:  # the last check: a live driver of this study refuses this one before anything is written
        hold(paths, config.storage, "run")
    except StudyBusyError as exc:
        raise UserError([str(exc)]) from None
    salt = study_salt(config, paths, stored, cohort)
    if settings.pretrained:  # only once the run is sure to go ahead (it may download)
        fetch_pretrained_weights(list(space.backbones))
    paths.root.mkdir(parents=True, exist_ok=True)
    if salt is not None and stored is None:
        write_salt(paths, salt)
    write_config(paths, config)
    return config, paths, cohort
