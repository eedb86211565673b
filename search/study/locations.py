"""Where a study is: `--runs-dir/--study/--storage/--tracking-uri` resolved, flags first, then the study's
`config.json`, then the defaults of `search.study.folder`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.study.config import read_config
from search.study.credentials import (
    STORAGE_ENV,
    TRACKING_ENV,
    RDBStore,
    StorageError,
    open_storage,
    public,
    reveal,
    warn_if_on_command_line,
)
from search.study.folder import (
    StudyPaths,
    default_storage_url,
    default_tracking_uri,
    latest_study,
    sqlite_path,
    studies_in,
)


class LocationError(ValueError):
    """No study (or not the one asked for) where the flags point."""


@dataclass(frozen=True)
class Locations:
    """A runs folder, the study in it (None when none is needed and none exists) and its two stores.

    `storage` and `tracking_uri` are public (a password shows as `***`, see `search.study.credentials`):
    print them freely, and connect through `open_storage()` and `tracking_url()`.
    """

    runs_dir: Path
    study: str | None
    study_dir: Path | None
    storage: str | None
    tracking_uri: str

    def require_study(self) -> str:
        """The study name, or a LocationError saying how to make or name one."""
        if self.study is None:
            raise LocationError(
                f"no study in {self.runs_dir} (no {self.runs_dir}/<study>/config.json): run `stagesearch run` "
                "first, or point --runs-dir at the folder it wrote"
            )
        return self.study

    @property
    def paths(self) -> StudyPaths:
        """The study's folder (LocationError without a study)."""
        self.require_study()
        return StudyPaths(self.study_dir)

    def open_storage(self) -> RDBStore:
        """The study's Optuna storage, connected (StorageError saying how to give a missing password)."""
        if self.storage is None:
            raise StorageError(f"no Optuna storage: no study in {self.runs_dir}")
        path = sqlite_path(self.storage)
        if path is not None and not path.exists():
            raise StorageError(f"no Optuna storage at {path} (has study {self.study!r} started a search?)")
        return open_storage(self.storage)

    def tracking_url(self) -> str:
        """The MLflow tracking URI to connect with (its password, if any, put back)."""
        return reveal(self.tracking_uri, TRACKING_ENV)


def resolve(
    runs_dir: Path = Path("runs"),
    study: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Locations:
    """Locations of `study` (default: the latest study in `runs_dir`); LocationError for a missing study."""
    runs_dir = Path(runs_dir)
    name = study or latest_study(runs_dir)
    study_dir = runs_dir / name if name is not None else None
    config = read_config(StudyPaths(study_dir)) if study_dir is not None else None
    if study_dir is not None and storage is None and not StudyPaths(study_dir).config.exists():
        known = ", ".join(studies_in(runs_dir)) or "none"
        raise LocationError(f"no study named {name!r} in {runs_dir} (studies there: {known})")
    storage = storage or (config.storage if config is not None else None)
    if storage is None and study_dir is not None:
        storage = default_storage_url(StudyPaths(study_dir))
    recorded = config.tracking_uri if config is not None else None
    tracking_uri = tracking_uri or recorded or default_tracking_uri(runs_dir)
    return Locations(runs_dir, name, study_dir, public(storage) if storage else None, public(tracking_uri))


def add_location_flags(parser: argparse.ArgumentParser, study_required: bool) -> None:
    """Add --runs-dir, --study, --storage, --tracking-uri (all optional: defaults find what the search wrote)."""
    group = parser.add_argument_group("where the study is (if omitted: what `stagesearch run` wrote)")
    group.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="the runs folder (default: %(default)s)"
    )
    scope = "" if study_required else "; only used to find its MLflow store"
    group.add_argument(
        "--study", default=None, help=f"study name; if omitted, the latest study in --runs-dir{scope}"
    )
    group.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL; if omitted, the study's (config.json, password hidden: give it in "
        f"PGPASSWORD, ~/.pgpass or {STORAGE_ENV})",
    )
    group.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI; if omitted, the study's, else sqlite <runs-dir>/mlflow.db",
    )
    parser.set_defaults(_study_required=study_required)


def exit_error(message: str) -> SystemExit:
    """Print `error: message` to stderr and return the SystemExit(2) to raise."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return SystemExit(2)


def from_args(args: argparse.Namespace) -> Locations:
    """Resolve the flags added by `add_location_flags`; a missing study exits with code 2 and a clear message."""
    warn_if_on_command_line("--storage", args.storage, STORAGE_ENV)
    warn_if_on_command_line("--tracking-uri", args.tracking_uri, TRACKING_ENV)
    try:
        found = resolve(args.runs_dir, args.study, args.storage, args.tracking_uri)
        if getattr(args, "_study_required", True):
            found.require_study()
    except LocationError as exc:
        raise exit_error(str(exc)) from None
    return found


def where_flags(locations: Any) -> str:
    """The flags that point a later command at the same registry from any folder: `--runs-dir` (absolute), and
    `--tracking-uri` when the registry is not the one `--runs-dir` alone would find (password shown as ***)."""
    import shlex

    runs = Path(locations.runs_dir).resolve()
    flags = f"--runs-dir {shlex.quote(str(runs))}"
    try:
        found = resolve(runs).tracking_uri
    except LocationError:
        found = None
    return (
        flags
        if found == locations.tracking_uri
        else f"{flags} --tracking-uri {shlex.quote(locations.tracking_uri)}"
    )
