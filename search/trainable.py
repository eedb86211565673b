"""What one Ray Tune trial runs: cross-validated training of the sampled configuration, reported per epoch.

Runs in a Ray worker; it receives the cached ROI slices and the folds through Ray's object store (once per
search, not re-read per trial) and never talks to MLflow: the driver logs what it reports. Each report holds
scalars only (`search.results.TrialEpoch`); the out-of-fold table goes to `trials/<number>/oof.csv` in the
study folder, replaced at every reported epoch (Tune's function trainables report synchronously, so the file
always belongs to the last reported epoch, also when the scheduler stops the trial there). On a multi-node
cluster the study folder must be on storage every node sees, like Tune's own results folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from search.results import TrialEpoch
from search.study import OPTUNA_NUMBER_KEY, StudyPaths, write_oof
from trainers.config import TrainConfig
from trainers.data import build_slice_data
from trainers.preprocess import ScanROI
from trainers.train import EpochReport, cross_validate


def run_trial(
    config: dict[str, Any], rois: list[ScanROI], folds: list[dict], fixed: dict[str, Any],
    study_dir: str | None = None,
) -> None:  # fmt: skip
    """Train the k fold models of one configuration and `tune.report` after every epoch.

    With `study_dir` (and an Optuna trial number in `config`) the out-of-fold table goes to the study folder.
    """
    cfg = TrainConfig.from_dict({**fixed, **config})
    number = config.get(OPTUNA_NUMBER_KEY)
    oof_path = StudyPaths(Path(study_dir)).oof(int(number)) if study_dir and number is not None else None
    started = time.time()
    placement = {
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "pid": os.getpid(),
        "node": ray.util.get_node_ip_address(),
        "started_at": started,
    }
    data = build_slice_data(rois, cfg.resolution, cfg.channels)

    def on_epoch(rep: EpochReport) -> None:
        if oof_path is not None:
            write_oof(oof_path, rep.oof, rep.epoch)
        tune.report({**TrialEpoch.from_epoch(rep, cfg.epochs).to_result(), "reported_at": time.time(), **placement})

    cross_validate(data, folds, cfg, on_epoch=on_epoch, log=None)
