"""Where a study's stores are, and the passwords in their URLs: shown and written only as `***`, used only to
connect.

Resolving `--runs-dir/--study/--storage/--tracking-uri`: flags first, then the study's `config.json`
(`search.study.config`), then the defaults of `search.study.folder`.

A study's Optuna storage (`--storage postgresql://user:pass@host/db`) and MLflow tracking URI may hold a
password. Everything a user or another user of the machine can read shows the URL with `***` in its place:
`config.json`, printed lines and hints, the files Ray pickles into the study folder, the command lines of the
servers we start. The password lives in this process's memory (when it came with a flag) or in the
environment, and is put back into the URL only to connect (`reveal`):

1. a URL given with its password earlier in this process (a flag, `public` remembers it);
2. `STAGESEARCH_STORAGE` (storage) or `MLFLOW_TRACKING_URI` (tracking): the same URL with its password;
3. otherwise the URL without a password, so that PostgreSQL's client library (libpq) finds it in
   `PGPASSWORD`, `PGPASSFILE` or `~/.pgpass`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna

from search.guard.db_wait import wait_for_database
from search.study.config import read_config
from search.study.folder import (
    StudyPaths,
    default_storage_url,
    default_tracking_uri,
    latest_study,
    sqlite_path,
    studies_in,
)

HIDDEN = "***"
#: The Optuna storage URL with its password (also `stagesearch run`'s storage when --storage is not given).
STORAGE_ENV = "STAGESEARCH_STORAGE"
#: MLflow's own variable: the tracking URI with its password.
TRACKING_ENV = "MLFLOW_TRACKING_URI"
HOW_TO_GIVE = {
    STORAGE_ENV: "PGPASSWORD (or PGPASSFILE, ~/.pgpass) for PostgreSQL, or the whole URL with its password in "
    f"{STORAGE_ENV}",
    TRACKING_ENV: "PGPASSWORD (or PGPASSFILE, ~/.pgpass) for PostgreSQL, MLFLOW_TRACKING_USERNAME and "
    f"MLFLOW_TRACKING_PASSWORD for an MLflow server, or the whole URI with its password in {TRACKING_ENV}",
}

_known: dict[str, str] = {}  # URL without its password -> the URL with it, given to this process


def _parts(url: str) -> tuple[str | None, str, str] | None:
    """(password, URL without it, URL with `***` for it) of a URL with a user part; None for any other URL.

    Database URLs are read the way SQLAlchemy reads them (the driver connects with what SQLAlchemy parsed);
    http(s) URLs the way an HTTP client does.
    """
    if url.split("://", 1)[0].lower() in ("http", "https"):
        parts = urlsplit(url)
        if parts.password is None:
            return None
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        bare, hidden = (urlunsplit(parts._replace(netloc=f"{u}@{host}")) for u in (user, f"{user}:{HIDDEN}"))
        return parts.password, bare, hidden
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    query = dict(parsed.query)
    password = parsed.password if parsed.password is not None else query.pop("password", None)
    if parsed.username is None and password is None:
        return None

    def render(secret: str | None) -> str:  # hide_password renders any password as ***
        return URL.create(
            parsed.drivername, parsed.username, secret, parsed.host, parsed.port, parsed.database, query
        ).render_as_string(hide_password=True)

    return (
        (None if password is None else str(password)),
        render(None),
        render(None if password is None else HIDDEN),
    )


def has_password(url: str | None) -> bool:
    """Whether `url` holds a password itself (not `***`)."""
    found = _parts(url) if url else None
    return bool(found and found[0] is not None and found[0] != HIDDEN)


def public(url: str) -> str:
    """`url` as it may be shown and written: its password replaced by `***`, and remembered by this process."""
    found = _parts(url)
    if found is None or found[0] in (None, HIDDEN):
        return url
    password, bare, hidden = found
    _known[bare] = url
    return hidden


def public_argv(argv: list[str]) -> list[str]:
    """A command line as it may be recorded: each URL (`--flag URL` or `--flag=URL`) made `public`."""
    out = []
    for token in argv:
        flag, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
        out.append(f"{flag}{eq}{public(value)}" if "://" in value else token)
    return out


def reveal(url: str, env: str = STORAGE_ENV) -> str:
    """The URL to connect with: the URL itself when it holds its password, else the password from this process
    or the environment variable `env` (see the module's docstring); else the URL without a password (libpq)."""
    found = _parts(url)
    if found is None or found[0] not in (None, HIDDEN):
        return url
    bare = found[1]
    if bare in _known:
        return _known[bare]
    given = os.environ.get(env, "")
    match = _parts(given) if given else None
    if match is not None and match[1] == bare and match[0] not in (None, HIDDEN):
        return given
    return bare if found[0] == HIDDEN else url


def warn_if_on_command_line(flag: str, url: str | None, env: str) -> None:
    """One line on stderr when a flag's URL holds a password: every user of the machine can read it in `ps`."""
    if has_password(url):
        print(
            f"warning: the password in {flag} can be read by every user of this machine in the process list "
            f"(ps); give it in the environment instead: {HOW_TO_GIVE[env]}",
            file=sys.stderr,
            flush=True,
        )


def scrub(text: str, url: str, env: str = STORAGE_ENV) -> str:
    """`text` (an error message, say) with the password of `url` (as revealed) replaced by `***`."""
    found = _parts(reveal(url, env))
    password = found[0] if found else None
    return text.replace(password, HIDDEN) if password and password != HIDDEN else text


class StorageError(Exception):
    """The Optuna storage cannot be opened; the message names the store (password hidden) and what to do."""


@wait_for_database
class RDBStore(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, pickled with `***` for the password of its URL.

    Ray Tune pickles the searcher and the callbacks (which hold the storage) into the study folder; unpickled
    again, the URL is revealed the way `reveal` says. Its calls wait for a database that does not answer
    (`search.guard.db_wait`), and its connections are checked before use, so a restarted server is reconnected.
    """

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["url"] = public(state["url"])
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__({**state, "url": reveal(state["url"], STORAGE_ENV)})


def open_storage(url: str, **kwargs: object) -> RDBStore:
    """The Optuna storage at `url` (public or not); StorageError saying how to give the password when the
    database refuses the connection, or which package to install when its driver is missing."""
    import sqlalchemy.exc

    shown = public(url)
    try:
        return _connect(reveal(url, STORAGE_ENV), kwargs)
    except ImportError as exc:
        hint = " (pip install 'stagesearch[postgres]')" if shown.startswith("postgresql") else ""
        raise StorageError(f"no database driver for the Optuna storage {shown}: {exc}{hint}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = scrub(str(getattr(exc, "orig", None) or exc), url).strip().splitlines()[0]
        raise StorageError(
            f"cannot open the Optuna storage {shown}: {reason}. The study records its storage without the "
            f"password: if it needs one, give it in the environment: {HOW_TO_GIVE[STORAGE_ENV]}"
        ) from None


#: Seconds to wait before each retry of a storage whose schema another process was creating at the same moment.
SCHEMA_RETRY_WAITS = (0.5, 1.0, 2.0)


def _connect(url: str, kwargs: dict) -> RDBStore:
    """RDBStore(url), retried when another process created the same new storage's schema at the same moment.

    Optuna creates a new storage's tables and its schema version row on first open. Two processes opening a
    new storage together (a search starting while the dashboard or report polls it, two searches of one
    shared study) can both find it empty; the second to write its version row fails on a UNIQUE constraint.
    The storage is complete by then, so opening it again a moment later succeeds.
    """
    import sqlalchemy.exc

    if not url.startswith("sqlite"):  # connections a restarted server broke are replaced, not used
        engine = dict(kwargs.get("engine_kwargs") or {})
        engine.setdefault("pool_pre_ping", True)
        kwargs = {**kwargs, "engine_kwargs": engine}
    for wait in SCHEMA_RETRY_WAITS:
        try:
            return RDBStore(url, **kwargs)
        except sqlalchemy.exc.IntegrityError:
            time.sleep(wait)
    return RDBStore(url, **kwargs)


# --- where a study is: flags, then config.json, then defaults -----------------------------------------------


class LocationError(ValueError):
    """No study (or not the one asked for) where the flags point."""


@dataclass(frozen=True)
class Locations:
    """A runs folder, the study in it (None when none is needed and none exists) and its two stores.

    `storage` and `tracking_uri` are public (a password shows as `***`, see `search.study.locations`):
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
