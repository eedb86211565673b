"""`stagesearch dashboard`: optuna-dashboard on a study's Optuna storage, on 127.0.0.1, until Ctrl-C.

The server is optuna-dashboard's own command line with its threaded single-process wsgiref server:
`optuna_dashboard.run_server()` serves one request at a time, and the gunicorn server the command picks
when gunicorn is installed forks workers after opening the database.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import shutil  # noqa: E402

from dashboards.serve import http_url, serve  # noqa: E402
from search.study import add_location_flags, exit_error, from_args, sqlite_path  # noqa: E402


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


def dashboard_command() -> list[str]:
    """The optuna-dashboard command installed beside this Python (else the one on PATH)."""
    beside = Path(sys.executable).parent / "optuna-dashboard"
    found = str(beside) if beside.exists() else shutil.which("optuna-dashboard")
    if found is None:
        raise exit_error("optuna-dashboard is not installed (pip install optuna-dashboard)")
    return [found]


def study_id(storage_url: str, study: str) -> int:
    """The storage's id of `study` (optuna-dashboard's URLs use it)."""
    import optuna

    path = sqlite_path(storage_url)
    if path is not None and not path.exists():
        raise exit_error(f"no Optuna storage at {path} (study {study!r} has not started a search yet?)")
    storage = optuna.storages.get_storage(storage_url)
    try:
        return storage.get_study_id_from_name(study)
    except KeyError:
        names = ", ".join(s.study_name for s in storage.get_all_studies()) or "none"
        raise exit_error(f"study {study!r} is not in {storage_url} (studies there: {names})") from None


def main(argv: list[str] | None = None) -> int:
    """Start optuna-dashboard on the study's storage; returns the exit code."""
    args = build_parser().parse_args(argv)
    where = from_args(args)
    name = where.require_study()
    number = study_id(str(where.storage), name)
    url = http_url(args.host, args.port, f"/dashboard/studies/{number}")
    command = dashboard_command() + [
        str(where.storage), "--host", args.host, "--port", str(args.port), "--server", "wsgiref",
    ]  # fmt: skip
    return serve(command, args.host, args.port, url, f"optuna-dashboard for study {name}", probe="/api/meta")


if __name__ == "__main__":
    sys.exit(main())
