"""One session of a study: prepare the cohort once, open the study's Optuna and MLflow records, tune what is
left of the budget (`search.tune.driver`), summarise, register the winner."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import optuna

from search.console.routing import active
from search.guard.disk import free_space_problem
from search.session.outcome import print_outcome, publish, register, summarise, with_holdout
from search.study import (
    ERROR_ATTR,
    StorageError,
    StudyPaths,
    close_stale_trials,
    count_trials,
    finished_trials,
    open_storage,
    read_json,
    session_outcomes,
    sqlite_path,
    write_json,
)
from search.study.inputs import CohortChangedError, prepare_inputs
from search.tracking.outbox import TrackingOutbox, first_line, tracking_errors
from search.tracking.tracker import StudyTracker
from search.tune.driver import run_trials
from trainers.folds import FoldsMismatchError

TRACKING_WAIT_ENV = "STAGESEARCH_TRACKING_WAIT_S"
DEFAULT_TRACKING_WAIT_S = 120.0


def fail(problems: list[str]) -> int:
    """Print each problem as an `error:` line; returns the exit code of a user error (2)."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


@dataclass
class Session:
    """One session of a study: its Optuna record and storage, its tracking, and what was finished before."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    tracker: StudyTracker
    counts: dict[str, int]
    outbox: TrackingOutbox  # the trials' tracking calls, kept while MLflow fails (`search.tracking.outbox`)
    first_number: int = 0  # Optuna number of the first trial this session makes


def run(args: Any, config: dict, paths: StudyPaths, cohort: Any) -> int:
    """Prepare the inputs, open the session, tune what is left of the budget, summarise, register the winner;
    returns the exit code."""
    try:
        inputs = prepare_inputs(config, paths, cohort, log=lambda line: print(line, flush=True))
    except (
        CohortChangedError,
        FoldsMismatchError,
    ) as exc:  # e.g. a hold-out drawn before it took whole sites
        return fail([str(exc)])
    try:
        session = _open_session(args, config, paths)
    except StorageError as exc:
        return fail([str(exc)])
    except tracking_errors() as exc:
        return fail([f"cannot reach MLflow tracking at {config.tracking_uri}: {first_line(exc)}"])
    remaining = args.budget - session.counts["finished"]
    status = run_trials(args, config, paths, inputs, session, remaining) if remaining > 0 else "FINISHED"
    stopped = _stopped(session, config.study) if remaining > 0 else None
    disk_full = free_space_problem(paths.root, config.study) if remaining > 0 else None
    stopped = stopped or disk_full
    tracked = session.outbox.flush(0 if disk_full else tracking_wait())  # a full disk: nothing to wait for
    board, winner = summarise(args, config, paths, session, inputs=inputs), None
    try:
        if not tracked:
            untracked_warning(session.outbox, args.runs_dir, config.study)
        elif board.rows and not args.no_register and status == "FINISHED" and not stopped:
            winner = register(args, config, board, session, inputs)
    finally:  # written once, registration's hold-out results included (also when registering was interrupted)
        board = with_holdout(board, winner)
        publish(args, paths, session, board, "FAILED" if stopped else status, stopped)
    console = active()
    if console is not None:
        console.open_summary()
    print_outcome(board, config, paths, winner)
    if stopped:
        print(f"\nerror: {stopped}", file=sys.stderr, flush=True)
        return 1
    return 0


def tracking_wait() -> float:
    """Seconds the end of a search waits for a failing MLflow tracking (`TRACKING_WAIT_ENV`, default 120)."""
    return float(os.environ.get(TRACKING_WAIT_ENV, DEFAULT_TRACKING_WAIT_S))


def untracked_warning(outbox: TrackingOutbox, runs_dir: Any, study: str) -> None:
    """What to do when MLflow did not take everything: the trials are in Optuna; send the rest later."""
    where = f"--runs-dir {runs_dir} --study {study}"
    print(
        f"\nwarning: MLflow tracking at {outbox.tracker.tracking_uri} still fails after waiting {tracking_wait():.0f} s: "
        f"{len(outbox.pending)} record(s) of this search are kept in {outbox.path}. Every trial is in Optuna "
        f"as it ended, and leaderboard.json is written; the winner is not registered. When tracking works "
        f"again: `stagesearch sync-tracking {where}`, then `stagesearch register {where}`",
        file=sys.stderr,
        flush=True,
    )


def _stopped(session: Session, name: str) -> str | None:
    """The stop rule's message when this session's failures stopped the search (`search.tune.failures`),
    else None."""
    from search.tune.failures import stop_message

    outcomes = session_outcomes(session.study, session.first_number)
    failed = [
        t
        for t in session.study.get_trials(deepcopy=False)
        if t.number >= session.first_number
        and t.user_attrs.get(ERROR_ATTR)
        and t.datetime_complete is not None
    ]
    last = max(failed, key=lambda t: t.datetime_complete).user_attrs[ERROR_ATTR] if failed else ""
    return stop_message(outcomes, last, name)


def _open_session(args: Any, config: dict, paths: StudyPaths) -> Session:
    """The study's Optuna record and MLflow parent run, with what a killed session left running closed."""
    from search.tune.tuning import name_metrics

    name = config.study
    storage = open_storage(config.storage)  # pickled by Ray with the password hidden
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    name_metrics(
        study
    )  # objective "cv_auc", intermediate values "mean_fold_auc": new studies and resumed ones
    closed = close_stale_trials(study, storage)
    counts = count_trials(study)
    uri = config.tracking_uri
    tracker = StudyTracker(uri, name, paths.artifacts if uri.startswith(("sqlite:", "file:")) else None)
    settings = config.settings
    tracker.open_parent(
        read_json(paths.state).get("parent_run_id"),
        params={
            "budget": args.budget,
            **settings.to_json(),
            "cohort_hash": config.cohort_hash,
            "sampler": args.sampler,
            "scheduler": args.scheduler,
        },
        tags={"study": name, "space": str(settings.space)},
    )
    outbox = TrackingOutbox(tracker, paths.root)
    if not outbox.healthy:  # before closing runs left open: the kept calls may close them properly
        print(
            f"tracking: sending {len(outbox.pending)} record(s) an earlier session could not log", flush=True
        )
        outbox.flush(0)
    killed = tracker.close_stale_children(finished_trials(study))
    write_json(paths.state, {"parent_run_id": tracker.parent_run_id, "experiment_id": tracker.experiment_id})
    study.set_user_attr("mlflow_parent_run_id", tracker.parent_run_id)
    if closed or killed:
        print(
            f"resuming: closed {len(closed)} interrupted Optuna trial(s) {closed} and {killed} MLflow run(s) "
            "left running by the previous session",
            flush=True,
        )
    remaining = max(args.budget - counts["finished"], 0)
    if sqlite_path(config.storage) is None:  # a shared database: say which (its password hidden)
        print(f"optuna storage: {config.storage}", flush=True)
    print(
        f"study {name}: {counts['finished']} of {args.budget} trials finished before this session "
        f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed); "
        f"{remaining} to run",
        flush=True,
    )
    return Session(study, storage, tracker, counts, outbox, first_number=len(study.trials))
