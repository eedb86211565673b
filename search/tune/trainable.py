"""What one Ray Tune trial runs: cross-validated training of the sampled configuration, reported per epoch.

Runs in a Ray worker; it receives the cached ROI slices and the folds through Ray's object store (once per
search, not re-read per trial) and never talks to MLflow: the driver logs what it reports. Each report holds
scalars only (`search.study.results.TrialEpoch`); the out-of-fold table goes to `trials/<number>/oof.csv` in
the study folder, replaced at every reported epoch (Tune's function trainables report synchronously, so the file
always belongs to the last reported epoch, also when the scheduler stops the trial there); a trial that
reaches its last epoch also keeps its fold models there (`search.study.trial_models`). On a multi-node
cluster the study folder must be on storage every node sees, like Tune's own results folder.

A trial that fails on its own (NaN loss, out of memory after one retry with half the batch size, unusable
cached data, any other exception) does not raise: it writes `trials/<number>/failure.json` with the reason
and ends, so that Tune's retries stay for workers and nodes that die (`search.tune.failures`).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import ray
from ray import tune

from search.study import OPTUNA_NUMBER_KEY, StudyPaths, trial_models, write_json, write_oof
from search.study.results import TrialEpoch
from trainers.config import TrainConfig
from trainers.data import build_slice_data
from trainers.failures import Fault, describe, failure_reason
from trainers.memory import release_memory
from trainers.preprocess import ScanROI
from trainers.train import EpochReport, cross_validate

#: seconds a reused worker waits for the previous trial's thread to end (Ray Tune's variable)
THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"


def run_trial(
    config: dict[str, Any],
    rois: list[ScanROI],
    folds: list[dict],
    fixed: dict[str, Any],
    study_dir: str | None = None,
    faults: dict[str, Fault] | None = None,
) -> None:
    """Train the k fold models of one configuration and `tune.report` after every epoch (`_train_trial`);
    then give back to the OS the memory the trial freed: this worker runs the next trial (`trainers.memory`)."""
    try:
        _train_trial(config, rois, folds, fixed, study_dir, faults)
    finally:
        release_memory()  # after the trial's frame is gone, so that its tensors are free


def _train_trial(
    config: dict[str, Any],
    rois: list[ScanROI],
    folds: list[dict],
    fixed: dict[str, Any],
    study_dir: str | None = None,
    faults: dict[str, Fault] | None = None,
) -> None:
    """Train the k fold models of one configuration and `tune.report` after every epoch.

    With `study_dir` (and an Optuna trial number in `config`) the out-of-fold table goes to the study folder,
    and a failure is recorded there instead of raised. `faults` (tests only): by trial number or "*".
    """
    # Tune reuses this worker for the next trial only once this trial's thread has ended, waiting 2 s by default:
    # on a loaded machine the thread can take longer to wind down, and the next trial then fails ("Could not
    # re-use actor"). The worker reads the variable when it is reused, so setting it here covers every node.
    os.environ.setdefault(THREAD_TIMEOUT_ENV, "60")
    number = config.get(OPTUNA_NUMBER_KEY)
    paths = StudyPaths(Path(study_dir)) if study_dir and number is not None else None
    if paths is not None:
        paths.failure(int(number)).unlink(missing_ok=True)  # a record left by an attempt Tune retried
    fault = (faults or {}).get(str(number)) or (faults or {}).get("*")
    started = time.time()
    placement = {
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "pid": os.getpid(),
        "node": ray.util.get_node_ip_address(),
        "started_at": started,
    }
    reported: list[int] = []

    def on_epoch(rep: EpochReport) -> None:
        if paths is not None:
            write_oof(paths.oof(int(number)), rep.oof, rep.epoch)
            if (
                rep.models is not None
            ):  # the last epoch: keep the models for registration (search.study.trial_models)
                trial_models.save(paths, int(number), rep, cfg)
        tune.report(
            {**TrialEpoch.from_epoch(rep, cfg.epochs).to_result(), "reported_at": time.time(), **placement}
        )
        reported.append(rep.epoch)

    try:
        cfg = TrainConfig.from_dict({**fixed, **config})
        data = build_slice_data(fault.damage(rois) if fault else rois, cfg.resolution, cfg.channels)
        cross_validate(data, folds, cfg, on_epoch=on_epoch, log=None, oom_retry=True, fault=fault)
    except Exception as exc:  # SystemExit (how Tune stops a trial) is not an Exception and passes
        if paths is None:
            raise  # nowhere to record it: Tune records the error
        sampled = int({**fixed, **config}.get("batch_size") or 0)
        write_json(paths.failure(int(number)), failure_record(exc, sampled, reported, placement))


def failure_record(
    exc: Exception, sampled_batch: int, reported: list[int], placement: dict[str, Any]
) -> dict[str, Any]:
    """What `failure.json` holds: reason, one-line error, traceback tail, the batch size tried last, where."""
    return {
        "reason": failure_reason(exc),
        "error": describe(exc),
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
        "batch_size": int(getattr(exc, "batch_size", sampled_batch)),
        "sampled_batch_size": sampled_batch,
        "epochs_reported": max(reported, default=0),
        "failed_at": time.time(),
        **placement,
    }
