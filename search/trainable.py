"""What one Ray Tune trial runs: cross-validated training of the sampled configuration, reported per epoch.

Runs in a Ray worker; it receives the cached ROI slices and the folds through Ray's object store (once per
search, not re-read per trial) and never talks to MLflow: the driver logs what it reports.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import ray
from ray import tune

from trainers.config import TrainConfig
from trainers.data import build_slice_data
from trainers.preprocess import ScanROI
from trainers.train import EpochReport, cross_validate

OPTUNA_NUMBER_KEY = "_optuna_trial"


def _nan_to_none(values: list[float]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values]


def run_trial(config: dict[str, Any], rois: list[ScanROI], folds: list[dict], fixed: dict[str, Any]) -> None:
    """Train the k fold models of one configuration and `tune.report` after every epoch."""
    cfg = TrainConfig.from_dict({**fixed, **config})
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
        metrics = {k: v for k, v in rep.metrics.items() if not math.isnan(v)}
        tune.report(
            {
                "epoch": rep.epoch,
                "mean_fold_auc": rep.mean_fold_auc if not math.isnan(rep.mean_fold_auc) else 0.5,
                "cv_auc": rep.cv_auc,
                "train_loss": rep.train_loss,
                "accuracy": metrics.get("accuracy", 0.0),
                "f1": metrics.get("f1", 0.0),
                "final": rep.epoch == cfg.epochs,
                "pretrained": rep.pretrained,
                "pretrained_note": rep.pretrained_note,
                "metrics_json": json.dumps(metrics),
                "fold_auc_json": json.dumps(_nan_to_none(rep.fold_auc)),
                "oof_json": json.dumps(rep.oof),
                "reported_at": time.time(),
                **placement,
            }
        )

    cross_validate(data, folds, cfg, on_epoch=on_epoch, log=None)
