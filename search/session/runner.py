"""The main job: validate, prepare the cohort once, run the Ray Tune + Optuna search, report the outcome."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import optuna

from search.configure import UserError, configure
from search.console import ConsoleSession, active, log_file, reroute
from search.local_ray import describe_local_ray, prepare_local_ray
from search.options import build_parser
from search.outcome import print_outcome, register, summarise
from search.study import (
    ERROR_ATTR,
    StorageError,
    StudyPaths,
    close_stale_trials,
    count_trials,
    failure_counts,
    finished_trials,
    open_storage,
    read_json,
    session_outcomes,
    sqlite_path,
    write_json,
)
from search.study.inputs import CohortChangedError, StudyInputs, fixed_settings, prepare_inputs, study_space
from search.tracking import StudyTracker
from trainers.folds import FoldsMismatchError
from trainers.privacy import no_telemetry


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


#: Test-only: faults to inject into trials, as JSON by Optuna trial number (see trainers.failures.parse_faults).
FAULTS_ENV = "STAGESEARCH_TEST_FAULTS"
STRICT_METRICS_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


def main(argv: list[str] | None = None) -> int:
    """Run `stagesearch run`; returns the process exit code: 2 for user errors (before anything is written),
    1 when the search stopped because its trials kept failing (`search.failures`), else 0."""
    args = build_parser().parse_args(argv)
    no_telemetry()  # before MLflow, huggingface_hub or Ray are imported
    prepare_local_ray(args.address)  # before anything imports Ray
    with ConsoleSession(args.verbosity) as console:
        try:
            config, paths, cohort = configure(args, argv)
        except UserError as exc:
            return _fail(exc.problems)
        log = console.attach(log_file(paths.root), preload=("ray", "mlflow"))
        print(
            f"log: {log.resolve()} (what Ray, MLflow and Optuna say; --verbose shows it here too)", flush=True
        )
        return _run(args, config, paths, cohort)


@dataclass
class Session:
    """One session of a study: its Optuna record and storage, its tracking, and what was finished before."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    tracker: StudyTracker
    counts: dict[str, int]
    first_number: int = 0  # Optuna number of the first trial this session makes


def _run(args: Any, config: dict, paths: StudyPaths, cohort: Any) -> int:
    """Prepare the inputs, open the session, tune what is left of the budget, summarise, register the winner."""
    try:
        inputs = prepare_inputs(config, paths, cohort, log=lambda line: print(line, flush=True))
    except (
        CohortChangedError,
        FoldsMismatchError,
    ) as exc:  # e.g. a hold-out drawn before it took whole sites
        return _fail([str(exc)])
    try:
        session = _open_session(args, config, paths)
    except StorageError as exc:
        return _fail([str(exc)])
    remaining = args.budget - session.counts["finished"]
    status = _tune(args, config, paths, inputs, session, remaining) if remaining > 0 else "FINISHED"
    stopped = _stopped(session, config["study"]) if remaining > 0 else None
    board = summarise(args, config, paths, session, "FAILED" if stopped else status, stopped, inputs=inputs)
    winner = None
    if board.rows and not args.no_register and status == "FINISHED" and not stopped:
        winner = register(args, paths, config)
    console = active()
    if console is not None:
        console.open_summary()
    print_outcome(board, config, paths, winner)
    if stopped:
        print(f"\nerror: {stopped}", file=sys.stderr, flush=True)
        return 1
    return 0


def _stopped(session: Session, name: str) -> str | None:
    """The stop rule's message when this session's failures stopped the search (`search.failures`), else None."""
    from search.failures import stop_message

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
    from search.tuning import name_metrics

    name = config["study"]
    storage = open_storage(config["storage"])  # pickled by Ray with the password hidden
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    name_metrics(
        study
    )  # objective "cv_auc", intermediate values "mean_fold_auc": new studies and resumed ones
    closed = close_stale_trials(study, storage)
    counts = count_trials(study)
    uri = config["tracking_uri"]
    tracker = StudyTracker(uri, name, paths.artifacts if uri.startswith(("sqlite:", "file:")) else None)
    settings = config["settings"]
    tracker.open_parent(
        read_json(paths.state).get("parent_run_id"),
        params={
            "budget": args.budget,
            **settings,
            "cohort_hash": config["cohort_hash"],
            "sampler": args.sampler,
            "scheduler": args.scheduler,
        },
        tags={"study": name, "space": str(settings["space"])},
    )
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
    if sqlite_path(config["storage"]) is None:  # a shared database: say which (its password hidden)
        print(f"optuna storage: {config['storage']}", flush=True)
    print(
        f"study {name}: {counts['finished']} of {args.budget} trials finished before this session "
        f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed); "
        f"{remaining} to run",
        flush=True,
    )
    return Session(study, storage, tracker, counts, first_number=len(study.trials))


def _tune(
    args: Any, config: dict, paths: StudyPaths, inputs: StudyInputs, session: Session, remaining: int
) -> str:
    """Run the remaining trials on Ray; returns the parent run's status (KILLED when interrupted)."""
    import ray

    status = "FINISHED"
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(args)
    reroute()  # Ray's own console handlers, if any appeared with ray.init
    try:
        _fit(args, config, paths, inputs, session, remaining)
    except KeyboardInterrupt:
        status = "KILLED"
        print("interrupted: finished trials are kept; run again with --resume to continue", flush=True)
    finally:
        if started_here:
            ray.shutdown()
        stale = close_stale_trials(session.study, session.storage)
        session.tracker.close_stale_children(finished_trials(session.study))
        if stale:
            status = "KILLED"
            print(
                f"interrupted: {len(stale)} unfinished trial(s) closed; run again with "
                f"`--study {config['study']} --resume` to finish the budget",
                flush=True,
            )
    return status


def _fit(
    args: Any, config: dict, paths: StudyPaths, inputs: StudyInputs, session: Session, remaining: int
) -> None:
    """Build the searcher, scheduler, callbacks and Tuner for `remaining` trials, and fit."""
    import ray

    from search.progress import Progress, TuneLines, best_complete, progress_view
    from search.tuning import TrackingCallback, build_tuner, make_scheduler

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress line instead of Tune's tables
    settings, name, study = config["settings"], config["study"], session.study
    resources = _resources(args, ray.cluster_resources())
    slots = _parallel_slots(ray.cluster_resources(), resources, args.max_concurrent)
    # Tune creates only one pending trial at a time for non-random searchers unless told otherwise,
    # which would run the trials one after another.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(slots)
    print(
        f"ray: {_describe(ray.cluster_resources())}; each trial gets {resources}; up to {slots} at once",
        flush=True,
    )
    study_dir = str(paths.root.resolve())
    searcher = _searcher(args, settings, name, session, remaining, study_dir)
    progress = Progress(
        args.budget,
        session.counts,
        best_complete(study),
        reasons=failure_counts(study),
        max_epochs=int(settings["max_epochs"]),
        view=progress_view(args.verbosity),
    )
    trainable = _trainable(settings, inputs, resources, study_dir)
    scheduler = make_scheduler(
        args.scheduler, int(settings["max_epochs"]), args.grace_epochs, args.reduction_factor
    )
    callbacks = [
        TrackingCallback(session.tracker, study, session.storage, paths, progress.trial_finished),
        progress,
        TuneLines(),
    ]
    tuner = build_tuner(
        trainable,
        searcher,
        scheduler,
        remaining,
        resources,
        args.max_concurrent,
        str(paths.ray_results.resolve()),
        name,
        callbacks,
        args.max_retries,
    )
    progress.start()
    try:
        _run_tuner(tuner)
    finally:
        progress.close()


def _trainable(settings: dict, inputs: StudyInputs, resources: dict, study_dir: str) -> Any:
    """The trial function with the study's shared inputs (ROI slices, folds, fixed settings) bound to it."""
    from ray import tune

    from search.trainable import run_trial
    from trainers.failures import parse_faults

    return tune.with_parameters(
        run_trial,
        rois=inputs.prepared.rois,
        folds=inputs.prepared.folds,
        fixed=fixed_settings(settings, num_threads=max(1, int(resources["cpu"]))),
        study_dir=study_dir,
        faults=parse_faults(os.environ.get(FAULTS_ENV, "")),
    )


def _searcher(args: Any, settings: dict, name: str, session: Session, remaining: int, study_dir: str) -> Any:
    """The Optuna searcher of this study; a new study with --warm-start queues the space's study points first."""
    from search.tuning import SEARCH_METRIC, StageSearch, make_sampler

    study = session.study
    if getattr(args, "warm_start", False) and not study.trials:  # a resumed study has run (or queued) them
        for point in study_space(settings).study_points()[:remaining]:
            study.enqueue_trial(point, skip_if_exists=True)
    return StageSearch(
        space=study_space(settings).space,
        metric=SEARCH_METRIC,
        mode="max",
        study_name=name,
        storage=session.storage,
        sampler=make_sampler(args.sampler, int(settings["seed"]) + len(study.trials), args.budget),
        study_dir=study_dir,
        study_label=name,
    )


def _run_tuner(tuner: Any) -> None:
    """`tuner.fit()` without Ray's restore hint, and with Tune's strict metric check off while it runs.

    A trial that fails on its own before its first epoch ends without reporting. Tune means to accept that
    (its check skips results holding only its own keys), but in Ray 2.60 the result it checks then carries
    the flattened config (`config/lr`, ...), so the check rejects it and ends the whole search. Every report
    the trainable makes holds both metrics (`TrialEpoch.to_result`), and the searcher, the scheduler (ASHA
    skips results without its metric) and the callbacks read a result without them as "no value".
    """
    # Ray suggests Tuner.restore on interruption; this tool resumes with --resume instead.
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoRestoreHint())
    before = os.environ.get(STRICT_METRICS_ENV)
    os.environ[STRICT_METRICS_ENV] = "1"
    try:
        tuner.fit()
    finally:
        if before is None:
            os.environ.pop(STRICT_METRICS_ENV, None)
        else:
            os.environ[STRICT_METRICS_ENV] = before


class _NoRestoreHint(logging.Filter):
    """Drop Ray's "Resume experiment with: Tuner.restore(...)" hint (resume with --resume here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def _init_ray(args: Any) -> None:
    import ray

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
        return
    ray.init(num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=False, log_to_driver=False)
    print(describe_local_ray(ray.util.get_node_ip_address()), flush=True)


def _resources(args: Any, cluster: dict[str, float]) -> dict[str, float]:
    gpus = cluster.get("GPU", 0)
    if args.gpus_per_trial is not None:
        gpu = args.gpus_per_trial
    else:
        gpu = 0.25 if gpus else 0.0
    if args.cpus_per_trial is not None:
        cpu = args.cpus_per_trial
    else:
        # Without a GPU, one core per trial and as many trials as cores: measured faster in aggregate than one
        # trial on every core, and far more robust when the machine is shared (see docs/PERFORMANCE.md).
        cpu = 2.0 if gpus else 1.0
    return {"cpu": cpu, "gpu": gpu}


def _parallel_slots(cluster: dict[str, float], resources: dict[str, float], cap: int) -> int:
    """How many trials fit at once in the cluster's CPUs and GPUs (and under --max-concurrent)."""
    fits = [int(cluster.get("CPU", 1) // resources["cpu"])] if resources["cpu"] else []
    if resources["gpu"]:
        fits.append(int(round(cluster.get("GPU", 0) / resources["gpu"], 6)))
    slots = max(1, min(fits) if fits else 1)
    return min(slots, cap) if cap else slots


def _describe(cluster: dict[str, float]) -> str:
    return f"{int(cluster.get('CPU', 0))} CPUs, {cluster.get('GPU', 0):g} GPUs"
