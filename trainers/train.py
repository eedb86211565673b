"""Cross-validated training: all k folds advance one epoch at a time, so every epoch yields a mean fold AUC.

Training the folds in lockstep (rather than one fold after another) is what lets a search scheduler such as
ASHA compare trials after epoch 1, 2, 4, ... on the same footing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainers.augment import build_augment
from trainers.backbones import create_backbone, family_of
from trainers.config import TrainConfig
from trainers.data import SliceData, SliceDataset
from trainers.metrics import auc, summary_metrics


@dataclass
class EpochReport:
    """What one epoch of all folds produced; `mean_fold_auc` is what early stopping compares."""

    epoch: int
    train_loss: float
    fold_auc: list[float]
    mean_fold_auc: float
    cv_auc: float
    metrics: dict[str, float]
    oof: list[dict[str, Any]]
    seconds: float
    pretrained: bool = False
    pretrained_note: str = ""


@dataclass
class CVResult:
    """Outcome of one cross-validated configuration; `cv_auc` (pooled out-of-fold, patient level) is the headline."""

    config: dict[str, Any]
    family: str
    pretrained: bool
    pretrained_note: str
    device: str
    epochs_completed: int
    fold_auc: list[float]
    fold_auc_mean: float
    fold_auc_sd: float
    cv_auc: float
    metrics: dict[str, float]
    oof: list[dict[str, Any]]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


class _Fold:
    """One fold's model, optimiser, schedule and data."""

    def __init__(self, i: int, split: dict, data: SliceData, cfg: TrainConfig, device: torch.device) -> None:
        self.i = i
        self.val_patients = list(split["val"])
        train_idx = data.indices_of(split["train"])
        self.val_idx = data.indices_of(split["val"])
        torch.manual_seed(cfg.seed * 1000 + i)
        built = create_backbone(
            cfg.backbone,
            in_chans=cfg.channels,
            num_classes=2,
            pretrained=cfg.pretrained,
            img_size=cfg.resolution,
        )
        self.built = built
        self.model = built.model.to(device)
        # slices are axial planes of RAS-oriented volumes: left-right is the first image axis
        aug = (
            build_augment(cfg.aug_strength, seed=cfg.seed * 1000 + i, lr_axis=0)
            if cfg.aug_strength > 0
            else None
        )
        ds = SliceDataset(data, train_idx, aug)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + i)
        self.loader = DataLoader(
            ds,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=gen,
            drop_last=len(ds) % cfg.batch_size == 1,
        )
        counts = np.bincount(ds.labels[train_idx], minlength=2).astype(np.float64)
        weights = len(train_idx) / (2.0 * np.maximum(counts, 1.0))
        self.loss_fn = nn.CrossEntropyLoss(
            weight=torch.as_tensor(weights, dtype=torch.float32, device=device)
        )
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = max(1, cfg.epochs * len(self.loader))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _train_epoch(fold: _Fold, device: torch.device) -> float:
    fold.model.train()
    total, n = 0.0, 0
    for x, y in fold.loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device):
            loss = fold.loss_fn(fold.model(x).float(), y)
        fold.opt.zero_grad(set_to_none=True)
        loss.backward()
        fold.opt.step()
        fold.sched.step()
        total += float(loss.detach()) * len(y)
        n += len(y)
    return total / max(n, 1)


@torch.no_grad()
def predict_slices(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """P(T2) for every slice in `x` (N, C, R, R)."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        with _autocast(device):
            logits = model(x[start : start + batch_size].to(device)).float()
        out.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def patient_probabilities(slice_prob: np.ndarray, owners: np.ndarray) -> dict[int, float]:
    """Patient probability = mean of its slice probabilities."""
    return {int(p): float(slice_prob[owners == p].mean()) for p in np.unique(owners)}


def cross_validate(
    data: SliceData,
    folds: Sequence[dict],
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
) -> CVResult:
    """Train k fold models in lockstep; after each epoch call `on_epoch` (return True to stop early)."""
    return train_folds(data, folds, cfg, on_epoch, log)[0]


def train_folds(
    data: SliceData,
    folds: Sequence[dict],
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[CVResult, list[nn.Module]]:
    """`cross_validate`, also returning the k trained fold models (in eval mode, on the CPU)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    fold_states = [_Fold(i, split, data, cfg, device) for i, split in enumerate(folds)]
    history: list[EpochReport] = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        losses, fold_aucs, oof = [], [], []
        for fold in fold_states:
            losses.append(_train_epoch(fold, device))
            probs = patient_probabilities(
                predict_slices(fold.model, data.x[fold.val_idx], device), data.patient_index[fold.val_idx]
            )
            y = [int(data.patient_label[p]) for p in probs]
            fold_aucs.append(auc(np.asarray(y), np.asarray(list(probs.values()))))
            oof += [
                {"patient_id": data.patients[p], "label": lab, "prob": pr, "fold": fold.i}
                for (p, pr), lab in zip(probs.items(), y, strict=True)
            ]
        labels = np.asarray([r["label"] for r in oof])
        probs_all = np.asarray([r["prob"] for r in oof])
        metrics = summary_metrics(labels, probs_all)
        report = EpochReport(
            epoch=epoch,
            train_loss=float(np.mean(losses)),
            fold_auc=fold_aucs,
            mean_fold_auc=_nanmean(fold_aucs),
            cv_auc=metrics["auc"],
            metrics=metrics,
            oof=oof,
            seconds=time.perf_counter() - t0,
            pretrained=fold_states[0].built.pretrained,
            pretrained_note=fold_states[0].built.note,
        )
        history.append(report)
        if log:
            aucs = " ".join(f"{a:.3f}" for a in fold_aucs)
            log(
                f"epoch {epoch}/{cfg.epochs}  loss {report.train_loss:.4f}  fold AUC [{aucs}]  "
                f"mean {report.mean_fold_auc:.3f}  cv_auc {report.cv_auc:.3f}  ({report.seconds:.1f} s)"
            )
        if on_epoch is not None and on_epoch(report):
            break
    last = history[-1]
    valid = [a for a in last.fold_auc if not math.isnan(a)]
    built = fold_states[0].built
    models = [f.model.eval().cpu() for f in fold_states]
    result = CVResult(
        config=cfg.to_dict(),
        family=family_of(cfg.backbone),
        pretrained=built.pretrained,
        pretrained_note=built.note,
        device=str(device),
        epochs_completed=last.epoch,
        fold_auc=last.fold_auc,
        fold_auc_mean=_nanmean(last.fold_auc),
        fold_auc_sd=float(np.std(valid, ddof=1)) if len(valid) > 1 else math.nan,
        cv_auc=last.cv_auc,
        metrics=last.metrics,
        oof=last.oof,
        history=[
            {
                "epoch": h.epoch,
                "train_loss": h.train_loss,
                "mean_fold_auc": h.mean_fold_auc,
                "cv_auc": h.cv_auc,
            }
            for h in history
        ],
        seconds=time.perf_counter() - start,
    )
    return result, models
