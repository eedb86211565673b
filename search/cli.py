"""The main job: validate, prepare the cohort once, run the Ray Tune + Optuna search, report the outcome."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from search.local_ray import describe_local_ray, prepare_local_ray
from search.options import build_parser, resolve_settings, validate
from search.study import (
    StudyPaths,
    close_stale_trials,
    count_trials,
    default_storage_url,
    default_tracking_uri,
    finished_trials,
    latest_study,
    read_json,
    write_json,
)


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


def _holdout_problems(cohort: Any, fraction: float, folds: int, seed: int) -> list[str]:
    """A held-out split must keep both classes there and enough patients per class for the folds."""
    from collections import Counter

    from trainers.folds import split_holdout

    labels = cohort.patient_labels()
    try:
        held = set(split_holdout(labels, fraction, seed))
    except ValueError as exc:
        return [f"--holdout {fraction}: {exc}"]
    kept = Counter(v for p, v in labels.items() if p not in held)
    out = Counter(labels[p] for p in held)
    problems = []
    if len(out) < 2:
        problems.append(
            f"--holdout {fraction}: the held-out set would have a single class ({len(held)} patients)"
        )
    if min(kept[0], kept[1]) < folds:
        problems.append(
            f"--holdout {fraction}: leaves T1 {kept[0]} / T2 {kept[1]} patients for {folds} folds"
        )
    return problems


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def main(argv: list[str] | None = None) -> int:
    """Run `search/run.py`; returns the process exit code (2 for user errors, before anything is written)."""
    args = build_parser().parse_args(argv)
    prepare_local_ray(args.address)  # before anything imports Ray
    problems = validate(args)
    if problems:
        return _fail(problems)
    runs_dir: Path = args.runs_dir
    if args.resume and not args.study:
        args.study = latest_study(runs_dir)
        if args.study is None:
            return _fail([f"--resume: no study in {runs_dir} to continue"])
    stored = read_json(StudyPaths(runs_dir / args.study).config) if args.study else {}
    if args.resume and not stored:
        return _fail([f"--resume: no study named {args.study!r} in {runs_dir}"])
    settings, problems = resolve_settings(args, stored.get("settings", {}))
    if problems:
        return _fail(problems)

    from spaces import get_space

    gpus = (args.num_gpus if args.num_gpus is not None else _local_gpus()) if args.address is None else None
    if settings["space"] is None:
        settings["space"] = "paper" if (gpus or args.address) else "cpu"
        why = f"{gpus} GPU(s) visible" if gpus else ("Ray cluster" if args.address else "no GPU visible")
    else:
        why = "resumed study" if stored else "chosen with --space"
    space = get_space(str(settings["space"]))
    if settings["max_epochs"] is None:
        settings["max_epochs"] = space.MAX_EPOCHS
    print(f"search space: {settings['space']} ({why}): {space.DESCRIPTION}; {settings['max_epochs']} epochs max",
          flush=True)  # fmt: skip

    if settings["pretrained"]:
        _announce_missing_weights(space.BACKBONES)

    from trainers.cv import resolve_manifest
    from trainers.manifest import ManifestError, load_manifest

    try:
        manifest = resolve_manifest(settings["manifest"], int(settings["phantom_patients"]), 0)
        cohort = load_manifest(manifest, folds=int(settings["folds"]), cv_group=str(settings["cv_group"]))
    except ManifestError as exc:
        return _fail([str(exc)])
    chash = cohort.content_hash()
    if settings["holdout"]:
        problems = _holdout_problems(
            cohort, float(settings["holdout"]), int(settings["folds"]), int(settings["seed"])
        )
        if problems:
            return _fail(problems)
    if stored and stored.get("cohort_hash") != chash:
        return _fail([f"study {args.study!r} was made on cohort {stored.get('cohort_hash')}, but {manifest} "
                      f"is now {chash} (changed files?); start a new --study"])  # fmt: skip

    study_name = args.study or f"{settings['space']}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = StudyPaths(runs_dir / study_name)
    storage_url = args.storage or stored.get("storage") or default_storage_url(paths)
    tracking_uri = args.tracking_uri or stored.get("tracking_uri") or default_tracking_uri(runs_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    sessions = stored.get("sessions", []) + [{"argv": sys.argv[1:] if argv is None else argv,
                                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}]  # fmt: skip
    config = {
        "study": study_name,
        "settings": settings,
        "manifest_path": str(Path(manifest).resolve()),
        "cohort_hash": chash,
        "patients": len(cohort.patients),
        "storage": storage_url,
        "tracking_uri": tracking_uri,
        "sessions": sessions,
    }
    write_json(paths.config, config)
    return _run(args, settings, config, paths, cohort, manifest)


def _run(args: Any, settings: dict, config: dict, paths: StudyPaths, cohort: Any, manifest: Path) -> int:
    import optuna
    import ray

    from search.progress import Progress, best_complete, format_leaderboard, leaderboard_rows
    from search.tracking import StudyTracker
    from search.trainable import run_trial
    from search.tuning import (
        SEARCH_METRIC,
        StageSearch,
        TrackingCallback,
        build_tuner,
        make_sampler,
        make_scheduler,
    )
    from spaces import get_space
    from trainers.cv import prepare_cohort

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress line instead of Tune's tables
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name = config["study"]
    holdout: list[str] = []
    if settings["holdout"]:
        from trainers.folds import load_or_make_holdout

        holdout = load_or_make_holdout(
            paths.holdout, cohort.patient_labels(), float(settings["holdout"]), int(settings["seed"]),
            config["cohort_hash"],
        )  # fmt: skip
        print(f"held out {len(holdout)} patients for the final test ({paths.holdout}); no trial sees them",
              flush=True)  # fmt: skip
    prepared = prepare_cohort(
        manifest, int(settings["folds"]), int(settings["seed"]), str(settings["cv_group"]), paths.folds,
        cohort=cohort, exclude=holdout,
    )  # fmt: skip
    storage = optuna.storages.RDBStorage(config["storage"])
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    closed = close_stale_trials(study)
    counts = count_trials(study)
    remaining = args.budget - counts["finished"]

    local = config["tracking_uri"].startswith("sqlite:") or config["tracking_uri"].startswith("file:")
    tracker = StudyTracker(config["tracking_uri"], name, paths.artifacts if local else None)
    state = read_json(paths.state)
    tracker.open_parent(
        state.get("parent_run_id"),
        params={
            "budget": args.budget,
            **settings,
            "cohort_hash": config["cohort_hash"],
            "sampler": args.sampler,
            "scheduler": args.scheduler,
        },  # fmt: skip
        tags={"study": name, "space": str(settings["space"])},
    )
    killed = tracker.close_stale_children(finished_trials(study))
    write_json(paths.state, {"parent_run_id": tracker.parent_run_id, "experiment_id": tracker.experiment_id})
    study.set_user_attr("mlflow_parent_run_id", tracker.parent_run_id)
    if closed or killed:
        print(f"resuming: closed {len(closed)} interrupted Optuna trial(s) {closed} and {killed} MLflow run(s) "
              "left running by the previous session", flush=True)  # fmt: skip
    print(f"study {name}: {counts['finished']} of {args.budget} trials finished before this session "
          f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed); "
          f"{max(remaining, 0)} to run", flush=True)  # fmt: skip

    status = "FINISHED"
    if remaining > 0:
        started_here = not ray.is_initialized()
        if started_here:
            _init_ray(args)
        try:
            resources = _resources(args, ray.cluster_resources())
            slots = _parallel_slots(ray.cluster_resources(), resources, args.max_concurrent)
            # Tune creates only one pending trial at a time for non-random searchers unless told otherwise,
            # which would run the trials one after another.
            os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(slots)
            print(f"ray: {_describe(ray.cluster_resources())}; each trial gets {resources}; up to {slots} at once",
                  flush=True)  # fmt: skip
            space = get_space(str(settings["space"]))
            searcher = StageSearch(
                space=space.space, metric=SEARCH_METRIC, mode="max", study_name=name, storage=storage,
                sampler=make_sampler(args.sampler, int(settings["seed"]) + len(study.trials)),
            )  # fmt: skip
            progress = Progress(args.budget, counts, best_complete(study))
            fixed = {"epochs": int(settings["max_epochs"]), "seed": int(settings["seed"]),
                     "pretrained": bool(settings["pretrained"]), "device": "auto",
                     "num_threads": max(1, int(resources["cpu"]))}  # fmt: skip
            from ray import tune

            trainable = tune.with_parameters(run_trial, rois=prepared.rois, folds=prepared.folds, fixed=fixed)
            tuner = build_tuner(
                trainable, searcher,
                make_scheduler(args.scheduler, int(settings["max_epochs"]), args.grace_epochs, args.reduction_factor),
                remaining, resources, args.max_concurrent, str(paths.ray_results.resolve()), name,
                [TrackingCallback(tracker, study, progress.trial_finished), progress],
            )  # fmt: skip
            # Ray suggests Tuner.restore on interruption; this tool resumes with --resume instead.
            tune_log = logging.getLogger("ray.tune.tune")
            if not any(isinstance(f, _NoRestoreHint) for f in tune_log.filters):
                tune_log.addFilter(_NoRestoreHint())
            tuner.fit()
        except KeyboardInterrupt:
            status = "KILLED"
            print("interrupted: finished trials are kept; run again with --resume to continue", flush=True)
        finally:
            if started_here:
                ray.shutdown()
            stale = close_stale_trials(study)
            tracker.close_stale_children(finished_trials(study))
            if stale:
                status = "KILLED"
                print(f"interrupted: {len(stale)} unfinished trial(s) closed; run again with "
                      f"`--study {name} --resume` to finish the budget", flush=True)  # fmt: skip
    counts = count_trials(study)
    rows = leaderboard_rows(study)
    best = best_complete(study)
    tracker.log_parent_summary(
        {"best_cv_auc": best[0] if best else float("nan"), **{f"trials_{k}": v for k, v in counts.items()}},
        {"best_trial": str(max(study.best_trials, key=lambda t: t.value).number) if best else ""},
        status if counts["finished"] < args.budget else "FINISHED",
    )
    write_json(paths.root / "leaderboard.json", {"counts": counts, "rows": rows})
    winner = None
    if rows and not args.no_register and status == "FINISHED":
        winner = _register(args, name, paths, config)
    _print_outcome(name, counts, rows, config, paths, format_leaderboard, winner)
    return 0


def _register(args: Any, name: str, paths: StudyPaths, config: dict) -> dict | None:
    """Register the winner (retrains its fold models; evaluates the held-out patients once)."""
    from dashboards.locations import resolve
    from search.register import RegisterError, register_study

    print()
    try:
        return register_study(
            resolve(args.runs_dir, name, config["storage"], config["tracking_uri"]), args.model_name
        )
    except RegisterError as exc:
        print(f"not registered: {exc}", flush=True)
        return None


def _announce_missing_weights(names: list[str]) -> None:
    """Say once, in the driver, which backbones will start from random initialisation."""
    from trainers.backbones import weights_available

    missing = [n for n in names if not weights_available(n)[0]]
    if missing:
        print(f"note: no local ImageNet weights for {', '.join(missing)}: those trials start from random "
              "initialisation (recorded on each trial as pretrained=false)", flush=True)  # fmt: skip


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


def _print_outcome(
    name: str, counts: dict, rows: list, config: dict, paths: StudyPaths, fmt: Any, winner: dict | None
) -> None:
    print()
    print(f"study {name}: {counts['complete']} complete, {counts['pruned']} pruned (stopped early), "
          f"{counts['failed']} failed")  # fmt: skip
    if rows:
        print("\nbest trial per backbone family (cv_auc = pooled out-of-fold patient-level AUC):")
        print(fmt(rows))
        w = rows[0]
        line = f"\nwinner: trial {w['trial']}, {w['backbone']} ({w['family']}), cv_auc {w['cv_auc']:.3f}"
        held = (winner or {}).get("holdout")
        if held:
            print(f"{line} | held-out AUC {held['auc']:.3f} (95% CI {held['ci_low']:.3f}-{held['ci_high']:.3f}, "
                  f"{held['n_patients']} patients never seen by any trial)")  # fmt: skip
        else:
            print(line)
            print("note: the best of many trials' cv_auc is optimistic (it was selected on the same folds); "
                  "run with --holdout 0.2 to test the winner on patients no trial has seen.")  # fmt: skip
        if winner:
            print(f"registered: {winner['model_uri']} (promote: python search/promote.py --best)")
    print(f"\nstudy folder: {paths.root}")
    print(f"optuna-dashboard:  optuna-dashboard --host 127.0.0.1 {config['storage']}")
    print(f"MLflow UI:         mlflow ui --host 127.0.0.1 --backend-store-uri {config['tracking_uri']}")
