"""`stagesearch mlflow-ui`: the MLflow UI on the study's tracking store, on 127.0.0.1, until Ctrl-C.

It prints the addresses of the study's runs table and of its registered model. The routes are MLflow 3's
(`mlflow/server/js` of the installed package): `#/experiments/<id>` alone opens whatever page the UI picks
for the experiment (the GenAI overview of traces, by default), `#/experiments/<id>/runs` the runs table of
the parent run and its nested trials, and `workflowType=machine_learning` puts the side bar in its
"Machine learning" mode; `#/models/<name>` is a registered model's page, `/versions/<n>` one version's.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import quote, urlencode  # noqa: E402

from dashboards.serve import http_url, serve  # noqa: E402
from search.study import Locations, add_location_flags, exit_error, from_args, sqlite_path  # noqa: E402

#: The runs table of an experiment, in the UI's "Machine learning" mode (MLflow 3.17's routes): all runs (the
#: trials nested under the collapsed `search` run), and the trials alone, best cv_auc first.
RUNS_ROUTE = "/#/experiments/{id}/runs?workflowType=machine_learning"
TRIALS_QUERY = "&" + urlencode(
    {"searchFilter": "tags.role = 'trial'", "orderByKey": "metrics.`cv_auc`", "orderByAsc": "false"},
    quote_via=quote,
)
MODEL_ROUTE = "/#/models/{name}"
VERSION_ROUTE = "/#/models/{name}/versions/{version}"


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
    line would be visible in `ps`). Uvicorn's access log is off: it printed a line per HTTP request (hundreds
    in a few minutes of browsing) and buried the addresses; uvicorn's warnings and errors still show."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--uvicorn-opts",
        "--no-access-log --log-level warning",
    ]


def study_pages(where: Locations) -> tuple[str, list[tuple[str, str]]]:
    """The path of the study's runs table ("/" without a study or experiment) and the (label, path) of its
    registered model's pages: the model, and the version the study registered."""
    if where.study is None:
        return "/", []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=where.tracking_url(), registry_uri=where.tracking_url())
    experiment = client.get_experiment_by_name(where.study)
    if experiment is None:
        return "/", []
    runs = RUNS_ROUTE.format(id=experiment.experiment_id)
    pages = [
        ("its trials, best cv_auc first (a pruned trial's run name ends in -pruned)", runs + TRIALS_QUERY)
    ]
    model = _registered(client, where)
    if model is not None:
        name, version = quote(model[0], safe=""), model[1]
        pages.append((f"registered model {model[0]}", MODEL_ROUTE.format(name=name)))
        pages.append(
            (f"version {version} (this study's winner)", VERSION_ROUTE.format(name=name, version=version))
        )
    return runs, pages


def _registered(client: Any, where: Locations) -> tuple[str, str] | None:
    """(model name, version) the study registered: its winner.json, or the newest version tagged with the study."""
    winner = where.paths.winner if where.study_dir is not None else None
    if winner is not None and winner.exists():
        record = json.loads(winner.read_text())
        if record.get("model_name") and record.get("model_version"):
            return str(record["model_name"]), str(record["model_version"])
    try:
        found = client.search_model_versions(f"tags.study = '{where.study}'")
    except Exception:  # a store that cannot filter on tags: no model page to print
        return None
    newest = max(found, key=lambda v: int(v.version), default=None)
    return (newest.name, str(newest.version)) if newest is not None else None


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
    # The server's own deprecation notice about a module it imports: nothing the user can act on.
    env.setdefault("PYTHONWARNINGS", "ignore:starlette.middleware.wsgi is deprecated")
    path, pages = study_pages(where)
    what = "MLflow UI" + (f", runs table of study {where.study}" if path != "/" else "")
    url = http_url(args.host, args.port, path)
    also = [f"{label}: {http_url(args.host, args.port, page)}" for label, page in pages]
    return serve(
        server_command(args.host, args.port, args.workers),
        args.host,
        args.port,
        url,
        what,
        probe="/health",
        env=env,
        also=also,
    )


if __name__ == "__main__":
    sys.exit(main())
