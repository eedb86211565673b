"""`stagesearch mlflow-ui`: the MLflow UI on the study's tracking store, on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402

from dashboards.serve import http_url, serve  # noqa: E402
from search.study import add_location_flags, exit_error, from_args, sqlite_path  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Flags of the MLflow UI launcher."""
    parser = argparse.ArgumentParser(
        prog="stagesearch mlflow-ui",
        description="Open the MLflow UI on the studies' tracking store (runs until Ctrl-C).",
    )
    add_location_flags(parser, study_required=False)
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default: 5000)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default: 1)")
    return parser


def server_command(host: str, port: int, workers: int) -> list[str]:
    """`mlflow server` run by this Python; its store goes in MLFLOW_BACKEND_STORE_URI (a password on the command
    line would be visible in `ps`)."""
    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Start the MLflow UI on the tracking store; returns the exit code."""
    args = build_parser().parse_args(argv)
    where = from_args(args)
    uri = where.tracking_uri
    if uri.startswith(("http://", "https://")):
        print(f"the study logs to an MLflow server already: open {uri}")
        raise exit_error("nothing to launch for a remote tracking server")
    if uri.startswith("databricks"):
        raise exit_error(f"nothing to launch for {uri}: open it in Databricks")
    store = sqlite_path(uri)
    if store is not None and not store.exists():
        raise exit_error(
            f"no MLflow store at {store}: no study has logged to {where.runs_dir} yet "
            "(run `stagesearch run` first, or pass --runs-dir / --tracking-uri)"
        )
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": where.tracking_url()}
    # Jobs (GenAI evaluation) would start a background job runner too; the UI of a search needs none.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    path = "/"
    if where.study is not None:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(tracking_uri=where.tracking_url()).get_experiment_by_name(where.study)
        if experiment is not None:
            path = f"/#/experiments/{experiment.experiment_id}"
    what = "MLflow UI" + (f" (study {where.study})" if where.study else "")
    url = http_url(args.host, args.port, path)
    return serve(server_command(args.host, args.port, args.workers), args.host, args.port, url, what,
                 probe="/health", env=env)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
