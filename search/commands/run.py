"""`stagesearch run`: validate, prepare the cohort once, run the Ray Tune + Optuna search, report the outcome
(`search.session`)."""

from __future__ import annotations

import sys

from search.console.routing import ConsoleSession, log_file
from search.guard.disk import disk_full_message, is_disk_full
from search.session.configure import UserError, configure
from search.session.driver_lock import release_all
from search.session.options import build_parser
from search.session.runner import fail, run
from search.tracking.outbox import short_client_retries
from search.tune.local_ray import prepare_local_ray
from trainers.privacy import no_telemetry


def main(argv: list[str] | None = None) -> int:
    """Run `stagesearch run`; returns the process exit code: 2 for user errors (before anything is written),
    1 when the search stopped because its trials kept failing (`search.tune.failures`), else 0."""
    args = build_parser().parse_args(argv)
    no_telemetry()  # before MLflow, huggingface_hub or Ray are imported
    short_client_retries()  # a failing tracking server costs seconds per call, not minutes
    prepare_local_ray(args.address)  # before anything imports Ray
    with ConsoleSession(args.verbosity) as console:
        try:
            config, paths, cohort = configure(args, argv)  # holds the study's driver lock (or refuses)
        except UserError as exc:
            return fail(exc.problems)
        try:
            log = console.attach(log_file(paths.root), preload=("ray", "mlflow"))
            print(
                f"log: {log.resolve()} (what Ray, MLflow and Optuna say; --verbose shows it here too)",
                flush=True,
            )
            return run(args, config, paths, cohort)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            print(f"\nerror: {disk_full_message(paths.root, config.study)}", file=sys.stderr, flush=True)
            return 1
        finally:
            release_all()
