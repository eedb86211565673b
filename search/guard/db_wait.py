"""The Optuna database restarted under a running search: every storage call waits for it, bounded.

Optuna's RDB storage turns a lost connection into `StorageInternalError` and does not try again, so a
PostgreSQL restart (an upgrade, a failover, a reboot of its host) in the middle of a search used to end the
search. `wait_for_database` wraps each method of the storage: a call that fails because the database cannot be
reached (SQLAlchemy's `OperationalError` or `InterfaceError`, or any error that invalidated its connection) is
made again, after 1, 2, 4 ... (at most 10) seconds, until it goes through or `STORAGE_WAIT_ENV` seconds
(default 300) have passed since the first failure; one line says what it waits for, one that the database
answers again. Connections are checked before use (`pool_pre_ping`), so those the restart broke are replaced.

Calls made again are safe: Optuna's writes are upserts (attributes, intermediate values) except three: a
trial's new state, made again after it went through, would find the trial finished (`set_trial_state_values`
then says True if the state is the one asked for); a parameter written again would break the one-value-per-name
rule (the call is done if the stored value is the one asked for); and a new trial whose reply was lost is made
twice (the extra one stays RUNNING and is closed as interrupted when the search ends; it is never counted as
finished).
After the wait the error goes on to the caller as before.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from search.adapters import OPTUNA_CACHED_STORAGE_CALLS, OPTUNA_SET_TRIAL_PARAM

STORAGE_WAIT_ENV = "STAGESEARCH_STORAGE_WAIT_S"
DEFAULT_WAIT_S = 300.0
#: the storage methods made again (BaseStorage's, and the private ones Optuna's cache calls instead of them:
#: a search's study storage is the cache over this one; `search.adapters` says why)
WAITING_METHODS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    *OPTUNA_CACHED_STORAGE_CALLS,
)


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database could not be reached, rather than refusing the
    call (a constraint, a finished trial, bad SQL)."""
    import sqlalchemy.exc

    from search.guard.disk import is_disk_full

    if is_disk_full(exc):  # SQLite on a full disk: nothing to wait for (`search.guard.disk`)
        return False
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _wait_s() -> float:
    return float(os.environ.get(STORAGE_WAIT_ENV, DEFAULT_WAIT_S))


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return text[0][:200] if text else type(cause).__name__


_inside = threading.local()  # a storage method calling another: only the outer call waits (one bound)


def waiting(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`method` made again while the database cannot be reached (see the module's text)."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "depth", 0):
            return method(self, *args, **kwargs)
        _inside.depth = 1
        try:
            return _with_waits(self, method, name, args, kwargs)
        finally:
            _inside.depth = 0

    return call


def _with_waits(self: Any, method: Callable[..., Any], name: str, args: tuple, kwargs: dict) -> Any:
    """One storage call, made again while the database cannot be reached, for at most the wait."""
    import optuna

    first_failure: float | None = None
    pause = 1.0
    while True:
        try:
            result = method(self, *args, **kwargs)
        except optuna.exceptions.UpdateFinishedTrialError:
            if first_failure is None or name != "set_trial_state_values":
                raise
            # made again after it went through: done if the trial is in the state asked for
            trial_id = kwargs.get("trial_id", args[0] if args else None)
            state = kwargs.get("state", args[1] if len(args) > 1 else None)
            if self.get_trial(trial_id).state != state:
                raise
            result = True
        except Exception as exc:
            if first_failure is None or not _param_written(self, name, args):
                if not unreachable(exc):
                    raise
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    print(
                        f"optuna storage: the database does not answer ({_first_line(exc)}); the search "
                        f"waits for it, up to {_wait_s():.0f} s ({STORAGE_WAIT_ENV})",
                        file=sys.stderr,
                        flush=True,
                    )
                if now - first_failure >= _wait_s():
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            result = None  # a parameter written again after it went through
        if first_failure is not None:
            waited = time.monotonic() - first_failure
            print(
                f"optuna storage: the database answers again after {waited:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return result


def _param_written(storage: Any, name: str, args: tuple) -> bool:
    """Whether Optuna's private parameter write (`OPTUNA_SET_TRIAL_PARAM`: trial_id, param_name, value, ...)
    made again failed because the first call went through: the trial holds the value asked for."""
    if name != OPTUNA_SET_TRIAL_PARAM or len(args) < 3:
        return False
    try:
        return storage.get_trial_param(args[0], args[1]) == args[2]
    except Exception:  # not stored, or the database still away: the call was not done
        return False


def wait_for_database(cls: type) -> type:
    """Class decorator: every method of `WAITING_METHODS` that `cls` has, made again as `waiting` says."""
    for name in WAITING_METHODS:
        method = getattr(cls, name, None)
        if method is not None:
            setattr(cls, name, waiting(method, name))
    return cls
