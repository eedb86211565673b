"""Training throughput per backbone x resolution, and where an epoch's time goes.

Runs the trainer's own fold step (`trainers.train._Fold`) on a synthetic cohort shaped like the phantom
(112 patients x 3 slabs, one fold's 80 % as training slices) that sits on the device, as in a trial. Each
epoch is timed twice: once as the trainer runs it (no synchronisation inside), giving images/s, and once
with a device synchronisation after each part, giving the shares of gathering the batch (data movement),
augmentation and the model step. On CUDA every configuration runs in fp32 and in bf16 + channels_last
(the trainer's default there).

    python -m bench.throughput                           # the cpu space's backbones at 64 and 96 px
    python -m bench.throughput --space paper --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench._common import median, table, write_result
from trainers.config import TrainConfig
from trainers.data import SliceData
from trainers.train import _Fold, _memory_format, resolve_device


def synthetic_cohort(patients: int, slabs: int, resolution: int, channels: int) -> SliceData:
    """Random slices with the phantom's layout: `slabs` slices per patient, alternating labels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(patients * slabs, channels, resolution, resolution, generator=gen)
    return SliceData(
        x=x,
        patient_index=np.repeat(np.arange(patients), slabs),
        patients=[f"P{i:03d}" for i in range(patients)],
        patient_label=np.arange(patients) % 2,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(fold: _Fold, x: torch.Tensor, y: torch.Tensor, parts: bool) -> dict[str, float]:
    """One training epoch; with ``parts`` the device is synchronised after gather, augment and step."""
    device = fold.device
    fmt = _memory_format(fold.fast)
    spent = {"move": 0.0, "augment": 0.0, "step": 0.0}
    fold.model.train()
    _sync(device)
    start = time.perf_counter()
    images = 0

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        if not parts:
            return fn()
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        spent[key] += time.perf_counter() - t0
        return out

    for idx in fold.batches():
        xb, yb = timed("move", lambda idx=idx: (x[idx], y[idx]))
        xb = timed("augment", lambda xb=xb: fold.augment(xb).contiguous(memory_format=fmt))
        timed("step", lambda xb=xb, yb=yb: fold.step(xb, yb))
        images += len(idx)
    _sync(device)
    total = time.perf_counter() - start
    return {"seconds": total, "images": images, **spent}


def measure(
    backbone: str, resolution: int, args: argparse.Namespace, device: torch.device, precision: str
) -> dict[str, Any]:
    """Images/s and time shares of one backbone at one resolution (median over the timed epochs)."""
    data = synthetic_cohort(args.patients, args.slabs, resolution, args.channels)
    n_train = int(round(0.8 * args.patients))
    split = {"train": data.patients[:n_train], "val": data.patients[n_train:]}
    cfg = TrainConfig(
        backbone=backbone,
        resolution=resolution,
        channels=args.channels,
        batch_size=args.batch_size,
        aug_strength=args.aug_strength,
        epochs=args.epochs + 1,
        device=str(device),
        precision=precision,
        num_threads=args.threads,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    x = data.x.to(device)
    y = torch.as_tensor(data.slice_labels(), dtype=torch.long, device=device)
    fold = _Fold(0, split, data, cfg, device, y)
    time_epoch(fold, x, y, parts=False)  # warm-up: allocator, cuDNN autotuning, lazy inits
    plain = [time_epoch(fold, x, y, parts=False) for _ in range(args.epochs)]
    split_runs = [time_epoch(fold, x, y, parts=True) for _ in range(args.epochs)]
    parted = sum(r["move"] + r["augment"] + r["step"] for r in split_runs)
    seconds = median([r["seconds"] for r in plain])
    row = {
        "backbone": backbone,
        "px": resolution,
        "precision": "bf16+channels_last" if fold.fast else "fp32",
        "img_per_s": plain[0]["images"] / seconds,
        "epoch_s": seconds,
        "move_%": 100 * sum(r["move"] for r in split_runs) / parted,
        "augment_%": 100 * sum(r["augment"] for r in split_runs) / parted,
        "step_%": 100 * sum(r["step"] for r in split_runs) / parted,
    }
    del fold, x, y
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def default_grid(space: str) -> tuple[list[str], list[int]]:
    """A space's backbones and resolutions."""
    from spaces import get_space

    chosen = get_space(space)
    return list(chosen.backbones), list(chosen.resolutions)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="cpu", help="take backbones and resolutions from this search space")
    p.add_argument("--backbones", help="comma-separated backbones (default: the space's)")
    p.add_argument("--resolutions", help="comma-separated resolutions in px (default: the space's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--aug-strength", type=float, default=1.0)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--patients", type=int, default=112, help="synthetic cohort size (3 slabs each)")
    p.add_argument("--slabs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration (after a warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--precisions",
        default=None,
        help="comma-separated: auto (bf16 + channels_last on CUDA), fp32 (default: both on CUDA, auto on CPU)",
    )
    p.add_argument(
        "--fp32-resolutions", help="on CUDA, measure fp32 only at these resolutions (comma-separated)"
    )
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    backbones, resolutions = default_grid(args.space)
    if args.backbones:
        backbones = args.backbones.split(",")
    if args.resolutions:
        resolutions = [int(r) for r in args.resolutions.split(",")]
    precisions = ["fp32", "auto"] if device.type == "cuda" else ["auto"]
    if args.precisions:
        precisions = args.precisions.split(",")
    fp32_at = {int(r) for r in args.fp32_resolutions.split(",")} if args.fp32_resolutions else None
    rows = []
    for backbone in backbones:
        for resolution in resolutions:
            for precision in precisions:
                if precision == "fp32" and fp32_at is not None and resolution not in fp32_at:
                    continue
                rows.append(measure(backbone, resolution, args, device, precision))
                print(table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    path = write_result(
        "throughput",
        {
            "device": str(device),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "rows": rows,
        },
        args.out,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
