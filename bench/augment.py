"""What augmentation costs an epoch: `--aug-strength 1` against `0`, alternating runs, median ratio.

One epoch of all k folds through the trainer (`trainers.train.cross_validate`, as `python -m trainers.cv`
runs it, minus the process start) on the default phantom cohort, `resnet10t` at 64 px, batch size 16.

    python -m bench.augment                  # 3 alternating runs of each strength
"""

from __future__ import annotations

import argparse

from bench._common import median, table, write_result
from trainers.config import TrainConfig
from trainers.cv import prepare_cohort, resolve_manifest
from trainers.train import cross_validate

TARGET_RATIO = 1.15


def epoch_seconds(prepared, cfg: TrainConfig) -> float:  # noqa: ANN001 - a PreparedCohort
    """Seconds of the one epoch of all folds (the trainer's own epoch timer)."""
    data = prepared.slice_data(cfg.resolution, cfg.channels)
    result = cross_validate(data, prepared.folds, cfg, log=None)
    return float(result.history[0]["seconds"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", help="cohort CSV (default: the phantom cohort of --patients)")
    p.add_argument("--patients", type=int, default=112)
    p.add_argument("--backbone", default="resnet10t")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--runs", type=int, default=3, help="runs of each strength, alternating")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    args = p.parse_args(argv)
    prepared = prepare_cohort(resolve_manifest(args.manifest, args.patients), folds=args.folds)
    base = TrainConfig(
        backbone=args.backbone,
        resolution=args.resolution,
        epochs=1,
        device=args.device,
        num_threads=args.threads,
    )
    times: dict[float, list[float]] = {0.0: [], 1.0: []}
    rows = []
    for run in range(args.runs):
        for strength in (0.0, 1.0):
            cfg = TrainConfig(**{**base.to_dict(), "aug_strength": strength})
            seconds = epoch_seconds(prepared, cfg)
            times[strength].append(seconds)
            rows.append({"run": run + 1, "aug_strength": strength, "epoch_s": seconds})
            print(table(rows[-1:]).splitlines()[-1] if len(rows) > 1 else table(rows[-1:]), flush=True)
    ratio = median(times[1.0]) / median(times[0.0])
    print(
        f"\nmedian epoch: aug 0 {median(times[0.0]):.2f} s, aug 1 {median(times[1.0]):.2f} s, ratio {ratio:.3f}"
    )
    print(f"target: ratio <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'}")
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    path = write_result(
        "augment",
        {
            "settings": settings,
            "rows": rows,
            "ratio": ratio,
            "target": TARGET_RATIO,
            "met": ratio <= TARGET_RATIO,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
