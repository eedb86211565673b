"""`stagesearch dashboard`: optuna-dashboard on a study's Optuna storage, on 127.0.0.1, until Ctrl-C.

The server is `dashboards/optuna_server.py`, optuna-dashboard's app in a threaded single-process wsgiref
server, given the storage URL in its environment: on a command line its password would be visible in `ps`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402

from dashboards.serve import http_url, serve  # noqa: E402
from search.study import (  # noqa: E402
    STORAGE_ENV,
    Locations,
    StorageError,
    add_location_flags,
    exit_error,
    from_args,
    reveal,
)
from search.tracking.run_notes import MIN_TRIALS_FOR_IMPORTANCE, SCHEDULER_METRIC, SEARCH_METRIC  # noqa: E402

#: What the dashboard's values are (also the study's user attribute "metrics").
VALUES = (
    f"values: objective {SEARCH_METRIC} (pooled out-of-fold AUC; a pruned trial shows its last intermediate "
    f"value); intermediate values {SCHEDULER_METRIC} per epoch (mean fold AUC, what early stopping compares)"
)


def build_parser() -> argparse.ArgumentParser:
    """Flags of the optuna-dashboard launcher."""
    parser = argparse.ArgumentParser(
        prog="stagesearch dashboard",
        description="Open optuna-dashboard on a study's Optuna storage (runs until Ctrl-C).",
    )
    add_location_flags(parser, study_required=True)
    parser.add_argument("--port", type=int, default=8080, help="port to serve on (default: 8080)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)"
    )
    return parser


def server_command(host: str, port: int) -> list[str]:
    """The dashboard server run by this Python; the storage URL goes in its environment, not here."""
    server = Path(__file__).with_name("optuna_server.py")
    return [sys.executable, str(server), "--host", host, "--port", str(port)]


def importance_note(complete: int) -> list[str]:
    """A warning line for the dashboard's "Hyperparameter Importance" panel when too few trials are complete."""
    if complete >= MIN_TRIALS_FOR_IMPORTANCE:
        return []
    return [
        f"note: only {complete} complete trial(s): the dashboard's hyperparameter importances need at least "
        f"{MIN_TRIALS_FOR_IMPORTANCE} to mean anything (with fewer they fit noise); the report leaves them out"
    ]


def study_id(where: Locations, study: str) -> tuple[int, int]:
    """The storage's id of `study` (optuna-dashboard's URLs use it) and its number of complete trials; exits
    with code 2 when the study is not there."""
    from optuna.trial import TrialState

    try:
        storage = where.open_storage()
    except StorageError as exc:
        raise exit_error(str(exc)) from None
    try:
        number = storage.get_study_id_from_name(study)
        return number, len(storage.get_all_trials(number, deepcopy=False, states=(TrialState.COMPLETE,)))
    except KeyError:
        names = ", ".join(s.study_name for s in storage.get_all_studies()) or "none"
        raise exit_error(f"study {study!r} is not in {where.storage} (studies there: {names})") from None
    finally:
        storage.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Start optuna-dashboard on the study's storage; returns the exit code."""
    args = build_parser().parse_args(argv)
    where = from_args(args)
    name = where.require_study()
    number, complete = study_id(where, name)
    url = http_url(args.host, args.port, f"/dashboard/studies/{number}")
    env = {**os.environ, STORAGE_ENV: reveal(str(where.storage), STORAGE_ENV)}
    return serve(
        server_command(args.host, args.port),
        args.host,
        args.port,
        url,
        f"optuna-dashboard for study {name}",
        probe="/api/meta",
        env=env,
        also=[VALUES, *importance_note(complete)],
    )


if __name__ == "__main__":
    sys.exit(main())
