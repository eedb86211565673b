"""Passwords in store URLs: shown and written only as `***`, used only to connect.

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

import os
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import optuna

from search.guard.db_wait import wait_for_database

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
