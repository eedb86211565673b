"""`stagesearch sync-tracking --study NAME`: send to MLflow what a search kept while tracking failed
(`search.tracking.outbox`)."""

from __future__ import annotations

import argparse
import sys

from search.console.routing import add_console_flags, quiet_console
from search.session.driver_lock import StudyBusyError, hold
from search.study import add_location_flags, from_args, read_config, read_json
from search.tracking.outbox import TrackingOutbox, first_line, short_client_retries, tracking_errors
from trainers.cli import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """Flags: where the study is, how long to keep trying."""
    p = argparse.ArgumentParser(
        prog="stagesearch sync-tracking",
        description="Send a study's kept tracking records (runs/<study>/pending-tracking.jsonl, written while "
        "its MLflow tracking failed during a search) to MLflow, in order, to the same runs. Every trial is in "
        "Optuna already; this completes MLflow's mirror of them. Refused while the study's search runs (it "
        "sends them itself when tracking works again).",
        formatter_class=HelpFormatter,
    )
    add_location_flags(p, study_required=True)
    p.add_argument(
        "--wait", type=float, default=0.0, help="seconds to keep trying while tracking still fails"
    )
    add_console_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Send the kept records; 0 when none is left, 1 when tracking still fails, 2 for user errors."""
    from search.tracking.tracker import StudyTracker

    short_client_retries()
    args = build_parser().parse_args(argv)
    where = from_args(args)
    paths = where.paths
    with quiet_console(args.verbosity, where.study_dir, "sync-tracking"):
        try:
            with hold(paths, where.storage, "sync-tracking"):
                outbox = TrackingOutbox(None, paths.root)
                if outbox.healthy:
                    print(f"nothing to send: study {where.study} has no kept tracking records")
                    return 0
                tracker = StudyTracker(where.tracking_url(), where.study, paths.artifacts)
                tracker.parent_run_id = read_json(paths.state).get("parent_run_id")
                tracker.max_epochs = read_config(paths).settings.max_epochs
                outbox.tracker = tracker
                total = len(outbox.pending)
                done = outbox.flush(args.wait)
        except StudyBusyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except tracking_errors() as exc:
            print(
                f"error: cannot reach MLflow tracking at {where.tracking_uri}: {first_line(exc)}",
                file=sys.stderr,
            )
            return 1
    if not done:
        print(
            f"error: MLflow tracking at {where.tracking_uri} still fails: {len(outbox.pending)} of {total} "
            f"record(s) left in {outbox.path}; run this again when it works",
            file=sys.stderr,
        )
        return 1
    print(f"sent {total} kept tracking record(s) of study {where.study} to {where.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
