"""The search's trials on Ray: start Ray (or join a cluster), size each trial, build the searcher, scheduler,
callbacks and Tuner for what is left of the budget, and fit.

Ray is imported inside the functions: an entry point calls `search.tune.local_ray.prepare_local_ray` before
anything imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from search.console.routing import reroute
from search.study import COMPARISON_ATTR, StudyPaths, close_stale_trials, failure_counts, finished_trials
from search.study.inputs import StudyInputs, fixed_settings, study_space
from search.tracking.outbox import tracking_errors
from search.tune.local_ray import describe_local_ray

#: Test-only: faults to inject into trials, as JSON by Optuna trial number (see trainers.failures.parse_faults).
FAULTS_ENV = "STAGESEARCH_TEST_FAULTS"
STRICT_METRICS_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


def run_trials(
    args: Any, config: dict, paths: StudyPaths, inputs: StudyInputs, session: Any, remaining: int
) -> str:
    """Run the remaining trials on Ray; returns the parent run's status (KILLED when interrupted).

    `session`: the study's `search.session.runner.Session` (its Optuna study and storage, tracker, counts)."""
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
        if session.outbox.healthy:  # else the kept calls close the runs when they are sent
            with contextlib.suppress(*tracking_errors()):
                session.tracker.close_stale_children(finished_trials(session.study))
        if stale:
            status = "KILLED"
            print(
                f"interrupted: {len(stale)} unfinished trial(s) closed; run again with "
                f"`--study {config.study} --resume` to finish the budget",
                flush=True,
            )
    return status


def _fit(
    args: Any, config: dict, paths: StudyPaths, inputs: StudyInputs, session: Any, remaining: int
) -> None:
    """Build the searcher, scheduler, callbacks and Tuner for `remaining` trials, and fit."""
    import ray

    from search.tune.progress import Progress, TuneLines, best_complete, progress_view
    from search.tune.tuning import TrackingCallback, build_tuner, make_scheduler

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress line instead of Tune's tables
    settings, name, study = config.settings, config.study, session.study
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
        max_epochs=int(settings.max_epochs),
        view=progress_view(args.verbosity),
    )
    trainable = _trainable(settings, inputs, resources, study_dir)
    scheduler = make_scheduler(
        args.scheduler, int(settings.max_epochs), args.grace_epochs, args.reduction_factor
    )
    callbacks = [
        TrackingCallback(session.outbox, study, session.storage, paths, progress.trial_finished),
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

    from search.tune.trainable import run_trial
    from trainers.failures import parse_faults

    return tune.with_parameters(
        run_trial,
        rois=inputs.prepared.rois,
        folds=inputs.prepared.folds,
        fixed=fixed_settings(settings, num_threads=max(1, int(resources["cpu"]))),
        study_dir=study_dir,
        faults=parse_faults(os.environ.get(FAULTS_ENV, "")),
    )


def _searcher(args: Any, settings: dict, name: str, session: Any, remaining: int, study_dir: str) -> Any:
    """The Optuna searcher of this study; a new study first queues its comparison trials (`comparison_points`)."""
    import optuna

    from search.tune.searcher import StageSearch
    from search.tune.tuning import make_sampler

    study = session.study
    if not study.trials:  # a resumed study has run (or queued) them
        for point in comparison_points(study_space(settings), args.study_first, args.per_family)[:remaining]:
            study.enqueue_trial(point, user_attrs={COMPARISON_ATTR: True})
    sampler = make_sampler(args.sampler, int(settings.seed) + len(study.trials), args.budget)
    return StageSearch(
        space=study_space(settings).space,
        study=optuna.load_study(study_name=name, storage=session.storage, sampler=sampler),
        storage=session.storage,
        study_dir=study_dir,
        study_label=name,
    )


def comparison_points(space: Any, study_first: bool, per_family: int) -> list[dict[str, Any]]:
    """The trials a new study runs first, each to its last epoch: with `study_first` every family's study point;
    with `per_family` N, N trials of every family in all (the study point first when `study_first`, the others
    with only the backbone fixed, the sampler choosing the rest), family by family in turns."""
    points = space.study_points() if study_first else []
    families = list(space.backbones)
    for _ in range(1 if study_first else 0, per_family):
        points += [{"backbone": b} for b in families]
    return points


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
