"""A study's `config.json`, typed: read and written here only.

`StudySettings` are fixed when a study is created (a resumed study keeps them; a flag that contradicts one is
refused); `StudyConfig` holds them with the cohort the study was made on, its stores and the sessions that ran
it. The document's schema is the study folder's format version (`search.study.folder.FORMAT_VERSION`); keys
this version does not know are kept as they were, so an older stagesearch's extra keys survive a rewrite.
Each session records beside its command line the sampler and early-stopping settings it ran with and the
versions of the software it ran on (`search_settings`, `software_versions`), so that the report's methods
section can say how the study was made without importing Ray or torch, and still say it after an upgrade.
Imports no optuna, Ray or torch: the dashboards read a study's config through it.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from search.study.folder import StudyFormatError, StudyPaths, check_format, read_json, write_json


@dataclass
class StudySettings:
    """What a study is, fixed at its creation. None: not given on the command line (filled in when the study is
    created: the space from the GPUs seen, backbones and resolutions all of the space's, its epochs)."""

    space: str | None = None
    backbones: list[str] | None = None
    resolutions: list[int] | None = None
    manifest: str | None = None  # None: the embedded phantom
    phantom_patients: int = 112
    folds: int = 5
    cv_group: str = "patient"  # or "site": whole sites per fold
    max_epochs: int | None = None
    holdout: float = 0.0
    seed: int = 0
    pretrained: bool = True
    pseudonymise: bool = False
    allow_duplicate_scans: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys this version does not know

    @classmethod
    def names(cls) -> list[str]:
        """The settings' names, in config.json's order."""
        return [f.name for f in fields(cls) if f.name != "extra"]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each setting's value when neither the stored study nor the command line gives one."""
        blank = cls()
        return {name: getattr(blank, name) for name in cls.names()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySettings:
        """Settings from config.json (a setting an older version did not record takes its default)."""
        known = {k: v for k, v in data.items() if k in cls.names() and v is not None}
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls.names()})

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.names()}
        return {**data, **self.extra}


@dataclass
class StudyConfig:
    """One study's config.json. A folder from before a key was recorded reads with that key's default."""

    study: str
    settings: StudySettings = field(default_factory=StudySettings)
    manifest_path: str | None = None  # the manifest the search read, resolved
    cohort_hash: str | None = None  # content hash of the cohort's files (trainers.manifest.Cohort)
    preprocess_version: int = 1  # the preprocessing its ROI slices were made with (1: before it was recorded)
    patients: int | None = None
    storage: str | None = None  # Optuna storage URL, password hidden
    tracking_uri: str | None = None  # MLflow tracking URI, password hidden
    sessions: list[dict[str, Any]] = field(default_factory=list)  # each `stagesearch run` on the study
    format: int = 1  # the study folder's format (1: before it was recorded)
    upgraded_from_format: int | None = None  # the format it was created with, when an upgrade continued it
    pseudonym_salt_check: str | None = None  # a pseudonymised study's salt's check value, never the salt
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys this version does not know

    @classmethod
    def from_json(cls, data: dict[str, Any], name: str) -> StudyConfig:
        """The config of study folder `name` from its JSON document."""
        names = {f.name for f in fields(cls)} - {"extra", "settings"}
        known = {k: v for k, v in data.items() if k in names and v is not None}
        known.setdefault("study", name)
        return cls(
            **known,
            settings=StudySettings.from_json(data.get("settings") or {}),
            extra={k: v for k, v in data.items() if k not in names and k != "settings"},
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["settings"] = self.settings.to_json()
        for key in ("upgraded_from_format", "pseudonym_salt_check"):
            if data[key] is None:
                data.pop(key)
        return {
            "format": data.pop("format"),
            **data,
            **self.extra,
        }  # the schema first, as a reader looks for it


def read_config(paths: StudyPaths) -> StudyConfig:
    """The study's config as recorded, for display: keys it lacks take their defaults (a folder without
    config.json reads as a blank config of format 1). `load_config` is for continuing or refitting a study."""
    return StudyConfig.from_json(read_json(paths.config), paths.name)


def load_config(paths: StudyPaths) -> StudyConfig:
    """The config of a study to continue, refit or register; StudyFormatError saying what to do when this
    version cannot use it (none, made by a newer version, or lacking what `stagesearch run` writes)."""
    data = read_json(paths.config)
    if not data:
        raise StudyFormatError(f"{paths.config} is missing or empty: {paths.root} is not a study folder")
    check_format(data, paths.root)
    return StudyConfig.from_json(data, paths.name)


def write_config(paths: StudyPaths, config: StudyConfig) -> None:
    """Write the study's config.json atomically (a reader never sees half of it)."""
    write_json(paths.config, config.to_json())


#: Distributions whose versions decide what a study computes (the report's methods table lists them).
SOFTWARE = (
    "stagesearch",
    "torch",
    "torchvision",
    "timm",
    "monai",
    "optuna",
    "ray",
    "mlflow",
    "numpy",
    "scikit-learn",
)


def software_versions() -> dict[str, str]:
    """Installed version of each of `SOFTWARE` (read from the package metadata, nothing imported) and Python."""
    found = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def search_settings(args: Any, max_epochs: int, startup_trials: int) -> dict[str, Any]:
    """The session's sampler and scheduler as `search.tune.tuning` builds them from these flags (the
    per-session flags that `config.json`'s settings do not hold); `startup_trials` is
    `search.tune.tuning.startup_trials` of the
    budget, passed in so that this module, which the report imports, does not import Ray."""
    record: dict[str, Any] = {"budget": args.budget, "sampler": args.sampler, "scheduler": args.scheduler}
    record["study_first"] = bool(getattr(args, "study_first", False))
    if getattr(args, "per_family", 0):
        record["per_family"] = int(args.per_family)
    if args.sampler == "tpe":
        record["startup_trials"] = startup_trials
    if args.scheduler == "asha":
        record.update(
            grace_epochs=min(args.grace_epochs, max_epochs),
            reduction_factor=args.reduction_factor,
            max_epochs=max_epochs,
        )
    return record
