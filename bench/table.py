"""`python -m bench.table`: the learning-curve table of a search space on the phantom, with every row's true quality.

Trains a fixed set of configurations of a space (every family; a Latin-hypercube design over lr, augmentation
strength and weight decay within the space's ranges, plus the seven study configurations) once each, to the
space's last epoch, on the study's folds of the default phantom, exactly as a search's trial trains them
(`trainers.train.cross_validate`, one thread). Per configuration, training seed and epoch it keeps each fold's
AUC, the pooled out-of-fold cv_auc and the OOF predictions, the wall seconds; and at the last epoch (and those of
`--eval-epochs`) the AUC on a large independent phantom (a seed of its own) of the fold models' mean prediction, as the
registered ensemble predicts (`trainers.ensemble`). `bench.simulate` replays search policies on the table.

Resumable and shardable: each finished run is one JSON line appended to `runs-<shard>.jsonl` in the table's
folder; a restarted shard skips runs any shard has finished with the same backbone fingerprint (a hash of the
backbone's initial weights and registry settings), so a row of a family whose initialisation changed is
trained again. Two shards on two cores mimic a search's two one-thread trials.

    nohup python -m bench.table --shard 0/2 &  nohup python -m bench.table --shard 1/2 &
    python -m bench.table --status             # coverage so far
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, describe_machine, machine_id, table
from bench.table_design import DESIGN_SEED, TABLE_VERSION, Run, design, fingerprint, plan
from trainers.atomic import write_text_atomic


def table_dir(space_name: str, out: str | Path | None = None) -> Path:
    """`bench/results/<machine>/table-<space>/` unless `out` names another folder."""
    return Path(out) if out else RESULTS / machine_id() / f"table-{space_name}"


def read_runs(folder: Path) -> list[dict[str, Any]]:
    """Every finished run of every shard (a line cut short by a killed process is skipped)."""
    rows = []
    for path in sorted(folder.glob("runs-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _append(path: Path, record: dict[str, Any]) -> None:
    """One line, on a line of its own even after a line a killed process cut short, synced to disk."""
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as fh:
        fh.write(("\n" if cut else "") + json.dumps(record, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _rounded(values: Iterable[float], places: int = 5) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), places) for v in values]


@dataclass
class Inputs:
    """What every run of a shard shares: the study's cohort and folds, and the independent phantom's slices."""

    prepared: Any
    data: Any
    patients: list[str]
    indep_data: Any
    indep_labels: np.ndarray


def prepare(args: argparse.Namespace, space: Any) -> Inputs:
    """The default phantom's folds and slices, and the independent phantom (generated once into the cache)."""
    from trainers.cv import prepare_cohort, resolve_manifest
    from trainers.data import build_slice_data
    from trainers.manifest import load_manifest
    from trainers.phantom import default_cohort
    from trainers.preprocess import load_rois

    resolution, channels = space.resolutions[0], space.channels[0]
    prepared = prepare_cohort(resolve_manifest(None, args.patients, 0), args.folds, args.fold_seed)
    data = prepared.slice_data(resolution, channels)
    indep = load_manifest(
        default_cohort(patients=args.indep_patients, seed=args.indep_seed), folds=2
    )  # no CV on it
    indep_data = build_slice_data(load_rois(indep), resolution, channels)
    labels = np.asarray(indep_data.patient_label, dtype=int)
    return Inputs(prepared, data, list(data.patients), indep_data, labels)


def independent_probs(models: Sequence[Any], data: Any) -> np.ndarray:
    """P(T2) per patient of `data`: the mean over the fold models of the mean over the patient's slices."""
    import torch

    from trainers.train import predict_slices

    device = torch.device("cpu")
    per_slice = np.mean([predict_slices(m, data.x, device, batch_size=512) for m in models], axis=0)
    sums = np.bincount(data.patient_index, weights=per_slice, minlength=len(data.patients))
    counts = np.bincount(data.patient_index, minlength=len(data.patients))
    return sums / np.maximum(counts, 1)


def epoch_row(rep: Any, order: dict[str, int], inputs: Inputs | None) -> tuple[dict[str, Any], Any]:
    """The table's record of one epoch (its OOF predictions in the header's patient order), with the AUC on the
    independent phantom when `inputs` is given; (record, the independent predictions or None)."""
    from trainers.metrics import auc

    probs = np.full(len(order), np.nan)
    for r in rep.oof:
        probs[order[r["patient_id"]]] = r["prob"]
    row = {
        "epoch": rep.epoch,
        "train_loss": round(rep.train_loss, 5),
        "fold_auc": _rounded(rep.fold_auc),
        "mean_fold_auc": round(rep.mean_fold_auc, 5),
        "cv_auc": round(rep.cv_auc, 5),
        "seconds": round(rep.seconds, 3),
        "cpu_seconds": round(rep.cpu_seconds, 3),
        "oof": _rounded(probs, 4),
    }
    if inputs is None:
        return row, None
    t0 = time.perf_counter()
    p = independent_probs(rep.fold_models, inputs.indep_data)
    row["indep_auc"] = round(auc(inputs.indep_labels, p), 5)
    row["indep_seconds"] = round(time.perf_counter() - t0, 3)
    return row, p


def train_run(run: Run, inputs: Inputs, space: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run to the space's last epoch; the table's record of every epoch."""
    from trainers.config import TrainConfig
    from trainers.train import EpochReport, cross_validate

    cfg = TrainConfig.from_dict(
        {
            **run.config.params(),
            "resolution": space.resolutions[0],
            "channels": space.channels[0],
            "batch_size": space.batch_sizes[0],
            "epochs": args.epochs or space.max_epochs,
            "seed": run.seed,
            "pretrained": False,
            "device": "cpu",
            "num_threads": args.threads,
        }
    )
    order = {p: i for i, p in enumerate(inputs.patients)}
    evals = {int(e) for e in args.eval_epochs.split(",") if e.strip()} | {cfg.epochs}
    epochs: list[dict[str, Any]] = []
    final_indep: list[float | None] = []

    def on_epoch(rep: EpochReport) -> None:
        row, p = epoch_row(rep, order, inputs if rep.epoch in evals else None)
        if p is not None and rep.epoch == cfg.epochs:
            final_indep[:] = _rounded(p, 4)
        epochs.append(row)

    started, load = time.time(), os.getloadavg()[0]
    result = cross_validate(inputs.data, inputs.prepared.folds, cfg, on_epoch=on_epoch, log=None)
    return {
        "key": run.key,
        "config_id": run.config.config_id,
        "seed": run.seed,
        "study_point": run.config.study_point,
        "params": run.config.params(),
        "family": result.family,
        "fingerprint": fingerprint(cfg.backbone, cfg.resolution, cfg.channels),
        "table_version": TABLE_VERSION,
        "setup_seconds": round(result.setup_seconds, 3),
        "seconds": round(result.seconds, 3),
        "started_at": started,
        "load_at_start": round(load, 2),  # 1-minute load average: other work on the machine slows the seconds
        "epochs": epochs,
        "indep_probs": final_indep,
    }


def write_header(
    folder: Path, args: argparse.Namespace, space: Any, inputs: Inputs, runs: Sequence[Run]
) -> None:
    """`table.json`: how the table is made (space, cohorts, folds, design), the OOF and independent patients."""
    header = {
        "bench": "table",
        "table_version": TABLE_VERSION,
        "space": space.name,
        "max_epochs": args.epochs or space.max_epochs,
        "resolution": space.resolutions[0],
        "phantom": {"patients": args.patients, "seed": 0, "fold_seed": args.fold_seed, "folds": args.folds},
        "cohort_hash": inputs.prepared.cohort_hash,
        "folds": inputs.prepared.folds,
        "oof_patients": inputs.patients,
        "oof_labels": [int(v) for v in inputs.data.patient_label],
        "independent": {"patients": args.indep_patients, "seed": args.indep_seed},
        "indep_labels": [int(v) for v in inputs.indep_labels],
        "eval_epochs": args.eval_epochs,
        "threads": args.threads,
        "machine": describe_machine(),
        "design_seed": DESIGN_SEED,
        "runs": [
            {"key": r.key, "seed": r.seed, "study_point": r.config.study_point, **r.config.params()}
            for r in runs
        ],
    }
    write_text_atomic(folder / "table.json", json.dumps(header, indent=1) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """Flags: the space and design, the cohorts, sharding, where the table goes."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--space", default="cpu", help="search space to tabulate (default cpu)")
    ap.add_argument(
        "--per-family", type=int, default=21, help="design points per family besides its study point"
    )
    ap.add_argument(
        "--extra-seeds", type=int, default=3, help="design points per family also trained at seed 1"
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the space's max)")
    ap.add_argument("--patients", type=int, default=112, help="patients of the study's phantom (default 112)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--fold-seed", type=int, default=0, help="the study's folds (a search's --seed; default 0)"
    )
    ap.add_argument(
        "--indep-patients", type=int, default=1000, help="independent phantom's patients (default 1000)"
    )
    ap.add_argument(
        "--indep-seed", type=int, default=11, help="its seed (default 11: neither 0 nor bench.generalise's 1)"
    )
    ap.add_argument(
        "--eval-epochs",
        default="",
        help="epochs scored on the independent phantom besides the last (default none: 1,000 patients cost "
        "40-170 s an epoch on a loaded 2-core machine, more than the epoch's training)",
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads per shard (default 1, as a search's trial)"
    )
    ap.add_argument("--shard", default="0/1", help="I/N: this process runs every N-th run starting at I")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many new runs (smoke tests)")
    ap.add_argument("--backbones", default=None, help="only these backbones (comma-separated; smoke tests)")
    ap.add_argument(
        "--out", default=None, help="table folder (default bench/results/<machine>/table-<space>)"
    )
    ap.add_argument("--status", action="store_true", help="print the table's coverage and exit")
    return ap


def status(folder: Path, runs: Sequence[Run]) -> str:
    """Runs done per family, their seconds, and the independent AUC of the last epoch."""
    done = {r["key"]: r for r in read_runs(folder)}
    rows = []
    for backbone in sorted({r.config.backbone for r in runs}):
        mine = [r for r in runs if r.config.backbone == backbone]
        got = [done[r.key] for r in mine if r.key in done]
        last = [g["epochs"][-1] for g in got]
        rows.append(
            {
                "backbone": backbone,
                "runs": f"{len(got)}/{len(mine)}",
                "median s": float(np.median([g["seconds"] for g in got])) if got else None,
                "best cv_auc": max((e["cv_auc"] for e in last), default=None),
                "best indep": max((e.get("indep_auc", 0) for e in last), default=None),
            }
        )
    return table(rows)


def main(argv: list[str] | None = None) -> int:
    """Train this shard's missing runs, one JSON line each; or print the coverage."""
    from spaces import get_space
    from trainers.privacy import no_telemetry

    args = build_parser().parse_args(argv)
    no_telemetry()
    space = get_space(args.space)
    runs = plan(design(space, args.per_family), args.extra_seeds)
    if args.backbones:
        runs = [r for r in runs if r.config.backbone in args.backbones.split(",")]
    folder = table_dir(space.name, args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if args.status:
        print(status(folder, runs))
        return 0
    index, _, count = args.shard.partition("/")
    mine = runs[int(index) :: int(count or 1)]
    prints = {b: fingerprint(b, space.resolutions[0], space.channels[0]) for b in space.backbones}
    done = {(r["key"], r["fingerprint"]) for r in read_runs(folder)}
    todo = [r for r in mine if (r.key, prints[r.config.backbone]) not in done][: args.limit]
    print(
        f"table {folder.name}: {len(runs)} runs in all, {len(mine)} in shard {args.shard}, {len(todo)} to train"
    )
    if not todo:
        return 0
    inputs = prepare(args, space)
    write_header(folder, args, space, inputs, runs)
    out = folder / f"runs-{index}.jsonl"
    for i, run in enumerate(todo, 1):
        record = train_run(run, inputs, space, args)
        _append(out, record)
        last = record["epochs"][-1]
        print(
            f"[{i}/{len(todo)}] {run.key}: cv_auc {last['cv_auc']:.3f}  independent {last['indep_auc']:.3f}  "
            f"({record['seconds']:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
