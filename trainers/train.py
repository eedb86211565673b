"""Cross-validated training: all k folds advance one epoch at a time, so every epoch yields a mean fold AUC.

Training the folds in lockstep (rather than one fold after another) is what lets a search scheduler such as
ASHA compare trials after epoch 1, 2, 4, ... on the same footing.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.augment import build_augment
from trainers.backbones import create_backbone, family_of
from trainers.config import TrainConfig
from trainers.data import SliceData
from trainers.failures import Fault, LossCheck, is_out_of_memory
from trainers.metrics import auc, fold_spread, patient_means, summary_metrics


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
    ended_at: float = 0.0  # wall-clock time (epoch seconds) at which the epoch ended
    #: CPU seconds this process spent on the epoch (all its threads): on a one-thread CPU run, what the epoch
    #: takes on an idle machine, whatever else the machine runs meanwhile (bench.table clocks with it)
    cpu_seconds: float = 0.0
    pretrained: bool = False
    pretrained_note: str = ""
    batch_size: int = (
        0  # the batch size this epoch trained with (half the configured one after running out of memory)
    )
    #: the k fold models as they are after this epoch, only on a run's last epoch (`cfg.epochs`): a caller can
    #: keep them before it reports (search.tune.trainable saves them: registration need not train them again)
    models: list[nn.Module] | None = field(default=None, repr=False, compare=False)
    #: the k fold models at every epoch (the same objects training goes on with: read, never keep or change them);
    #: a benchmark scores them on other patients between epochs (bench.table)
    fold_models: list[nn.Module] = field(default_factory=list, repr=False, compare=False)


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
    setup_seconds: float = 0.0  # moving the slices to the device and building the k fold models

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Fold:
    """One fold's model, optimiser, schedule, batch order and augmentation, all on the trial's device."""

    def __init__(
        self, i: int, split: dict, data: SliceData, cfg: TrainConfig, device: torch.device, y: torch.Tensor
    ) -> None:
        self.i = i
        self.device = device
        self.batch_size = cfg.batch_size
        self.val_patients = list(split["val"])
        train_idx = data.indices_of(split["train"])
        self.val_idx = data.indices_of(split["val"])
        self.train_idx = torch.as_tensor(train_idx, dtype=torch.long, device=device)
        seed = cfg.seed * 1000 + i
        torch.manual_seed(seed)
        built = create_backbone(
            cfg.backbone,
            in_chans=cfg.channels,
            num_classes=2,
            pretrained=cfg.pretrained,
            img_size=cfg.resolution,
        )
        self.built = built
        self.fast = cfg.precision == "auto" and device.type == "cuda"  # bf16 + channels_last
        self.model = built.model.to(device, memory_format=_memory_format(self.fast))
        # slices are axial planes of RAS-oriented volumes: left-right is the first image axis
        self.augment = build_augment(cfg.aug_strength, seed=seed, lr_axis=0, device=device)
        self.order = torch.Generator().manual_seed(seed)  # batch order, drawn on the CPU for every device
        n = len(train_idx)
        self.drop_last = n % cfg.batch_size == 1  # a lone last sample would break BatchNorm
        self.steps_per_epoch = max(
            1, n // cfg.batch_size if self.drop_last else math.ceil(n / cfg.batch_size)
        )
        counts = torch.bincount(y[self.train_idx], minlength=2).double().clamp(min=1.0)
        weights = (n / (2.0 * counts)).float()
        self.loss_fn = nn.CrossEntropyLoss(weight=weights)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = max(1, cfg.epochs * self.steps_per_epoch)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps)

    def batches(self) -> list[torch.Tensor]:
        """This epoch's shuffled batches of slice indices (on the device)."""
        n = len(self.train_idx)
        perm = torch.randperm(n, generator=self.order).to(self.device, non_blocking=True)
        idx = self.train_idx[perm]
        chunks = list(torch.split(idx, self.batch_size))
        if self.drop_last and len(chunks) > 1:
            chunks = chunks[:-1]
        return chunks

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """One optimiser step on an (already augmented) batch; returns the summed loss, on the device."""
        with _autocast(self.device, self.fast):
            loss = self.loss_fn(self.model(xb).float(), yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.detach() * len(yb)


def _memory_format(fast: bool) -> torch.memory_format:
    """channels_last for bf16 on CUDA (faster convolutions), the default layout otherwise."""
    return torch.channels_last if fast else torch.contiguous_format


def _autocast(device: torch.device, fast: bool):
    """bf16 autocast on CUDA when ``fast``; a no-op context otherwise."""
    if fast and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _train_epoch(
    fold: _Fold, x: torch.Tensor, y: torch.Tensor, epoch: int, check: LossCheck, fault: Fault | None = None
) -> float:
    """One epoch of one fold: gather, augment and step whole batches on the device; `check` stops it at a
    non-finite loss (see LossCheck for what that costs); one sync at the end for the epoch's mean loss."""
    fold.model.train()
    total = torch.zeros((), device=fold.device)
    n = 0
    fmt = _memory_format(fold.fast)
    for idx in fold.batches():
        xb = fold.augment(x[idx]).contiguous(memory_format=fmt)
        if fault is not None:
            xb = fault.on_step(check.steps + 1, xb, fold.batch_size)
        loss = fold.step(xb, y[idx])
        check.push(loss, fold.i, epoch)
        total += loss
        n += len(idx)
    check.flush()
    # the fold's last gradients are not needed again (each step clears them first): free them, so that the other
    # folds' epochs do not carry them (k-1 models' worth of memory; HRNet's 11 M parameters: 44 MB a fold)
    fold.opt.zero_grad(set_to_none=True)
    return float(total) / max(n, 1)


@torch.no_grad()
def predict_slices(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 64, fast: bool | None = None
) -> np.ndarray:
    """P(T2) for every slice in `x` (N, C, R, R); ``fast`` (default: on CUDA) = bf16 + channels_last."""
    model.eval()
    fast = device.type == "cuda" if fast is None else fast
    out = []
    for start in range(0, len(x), batch_size):
        with _autocast(device, fast):
            xb = x[start : start + batch_size].to(device).contiguous(memory_format=_memory_format(fast))
            logits = model(xb).float()
        out.append(torch.softmax(logits, dim=1)[:, 1])
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def cross_validate(
    data: SliceData,
    folds: Sequence[dict],
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
    oom_retry: bool = False,
    fault: Fault | None = None,
) -> CVResult:
    """Train k fold models in lockstep; after each epoch call `on_epoch` (return True to stop early).

    `oom_retry`: out of device memory, train again once with half the batch size (see `train_folds`).
    `fault` is for tests only: it injects a failure (trainers.failures.Fault).
    """
    return train_folds(data, folds, cfg, on_epoch, log, oom_retry, fault)[0]


def train_folds(
    data: SliceData,
    folds: Sequence[dict],
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
    oom_retry: bool = False,
    fault: Fault | None = None,
) -> tuple[CVResult, list[nn.Module]]:
    """`cross_validate`, also returning the k trained fold models (in eval mode, on the CPU).

    With `oom_retry`, running out of device memory frees the fold models and trains again from the start, once,
    with half the batch size (at least 2, for BatchNorm); the result's config and every epoch report carry the
    batch size used. Epochs the first attempt already passed to `on_epoch` are not passed again, so a caller
    that reports epochs sees each epoch once. An exception leaving here has `batch_size` set to the batch size
    of the attempt that raised it.
    """
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    x_all = data.x.to(device)  # the trial's whole cohort of slices, on its device once
    y_all = torch.as_tensor(data.slice_labels(), dtype=torch.long, device=device)
    seen = 0

    def once(report: EpochReport) -> bool | None:
        nonlocal seen
        if report.epoch <= seen:
            return None
        seen = report.epoch
        return on_epoch(report) if on_epoch is not None else None

    attempt = cfg
    try:
        return _train_attempt(data, folds, attempt, device, x_all, y_all, once, log, fault, start)
    except Exception as exc:
        exc.batch_size = attempt.batch_size
        half = attempt.batch_size // 2
        if not (oom_retry and is_out_of_memory(exc) and half >= 2):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    _release(device)  # the failed attempt's models and optimiser state are gone with its exception
    attempt = dataclasses.replace(cfg, batch_size=half)
    if log:
        log(f"out of memory at batch size {cfg.batch_size} ({first}); training again with batch size {half}")
    try:
        return _train_attempt(data, folds, attempt, device, x_all, y_all, once, log, fault, start)
    except Exception as exc:
        exc.batch_size = attempt.batch_size
        if is_out_of_memory(exc):
            exc.add_note(
                f"out of memory at batch size {cfg.batch_size}, and again after retrying with {half}"
            )
        raise


def _release(device: torch.device) -> None:
    """Give freed device memory back before a retry."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _train_attempt(
    data: SliceData,
    folds: Sequence[dict],
    cfg: TrainConfig,
    device: torch.device,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    on_epoch: Callable[[EpochReport], bool | None],
    log: Callable[[str], None] | None,
    fault: Fault | None,
    start: float,
) -> tuple[CVResult, list[nn.Module]]:
    """One training run of the k folds at `cfg` (its batch size may be a retry's)."""
    fold_states = [_Fold(i, split, data, cfg, device, y_all) for i, split in enumerate(folds)]
    check = LossCheck(device)
    setup_seconds = time.perf_counter() - start
    history: list[EpochReport] = []
    for epoch in range(1, cfg.epochs + 1):
        report = _epoch(data, fold_states, cfg, device, x_all, y_all, epoch, check, fault)
        history.append(report)
        if log:
            aucs = " ".join(f"{a:.3f}" for a in report.fold_auc)
            log(
                f"epoch {epoch}/{cfg.epochs}  loss {report.train_loss:.4f}  fold AUC [{aucs}]  "
                f"mean {report.mean_fold_auc:.3f}  cv_auc {report.cv_auc:.3f}  ({report.seconds:.1f} s)"
            )
        if on_epoch(report):
            break
    models = [f.model.eval().cpu() for f in fold_states]
    return _cv_result(cfg, device, fold_states[0].built, history, start, setup_seconds), models


def _epoch(
    data: SliceData,
    fold_states: list[_Fold],
    cfg: TrainConfig,
    device: torch.device,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    epoch: int,
    check: LossCheck,
    fault: Fault | None,
) -> EpochReport:
    """Train every fold one epoch, predict its validation patients; the epoch's report."""
    t0, c0 = time.perf_counter(), time.process_time()
    label_of = {p: int(lab) for p, lab in zip(data.patients, data.patient_label, strict=True)}
    losses, fold_aucs, oof = [], [], []
    for fold in fold_states:
        losses.append(_train_epoch(fold, x_all, y_all, epoch, check, fault))
        owners = data.patient_index[fold.val_idx]
        patients, probs = patient_means(
            [data.patients[p] for p in owners],
            predict_slices(fold.model, x_all[fold.val_idx], device, fast=fold.fast),
        )
        y = [label_of[p] for p in patients]
        fold_aucs.append(auc(np.asarray(y), probs))
        oof += [
            {"patient_id": pid, "label": lab, "prob": float(pr), "fold": fold.i}
            for pid, pr, lab in zip(patients, probs, y, strict=True)
        ]
    metrics = summary_metrics(np.asarray([r["label"] for r in oof]), np.asarray([r["prob"] for r in oof]))
    return EpochReport(
        epoch=epoch,
        train_loss=float(np.mean(losses)),
        fold_auc=fold_aucs,
        mean_fold_auc=fold_spread(fold_aucs)[0],
        cv_auc=metrics["auc"],
        metrics=metrics,
        oof=oof,
        seconds=time.perf_counter() - t0,
        ended_at=time.time(),
        cpu_seconds=time.process_time() - c0,
        pretrained=fold_states[0].built.pretrained,
        pretrained_note=fold_states[0].built.note,
        batch_size=cfg.batch_size,
        models=[f.model for f in fold_states] if epoch == cfg.epochs else None,
        fold_models=[f.model for f in fold_states],
    )


def _cv_result(
    cfg: TrainConfig,
    device: torch.device,
    built: Any,
    history: list[EpochReport],
    start: float,
    setup_seconds: float,
) -> CVResult:
    """The run's result: its last epoch's figures, and every epoch's in `history`."""
    last = history[-1]
    return CVResult(
        config=cfg.to_dict(),
        family=family_of(cfg.backbone),
        pretrained=built.pretrained,
        pretrained_note=built.note,
        device=str(device),
        epochs_completed=last.epoch,
        fold_auc=last.fold_auc,
        fold_auc_mean=fold_spread(last.fold_auc)[0],
        fold_auc_sd=fold_spread(last.fold_auc)[1],
        cv_auc=last.cv_auc,
        metrics=last.metrics,
        oof=last.oof,
        history=[
            {
                "epoch": h.epoch,
                "train_loss": h.train_loss,
                "mean_fold_auc": h.mean_fold_auc,
                "cv_auc": h.cv_auc,
                "seconds": h.seconds,
                "ended_at": h.ended_at,
            }
            for h in history
        ],
        seconds=time.perf_counter() - start,
        setup_seconds=setup_seconds,
    )
