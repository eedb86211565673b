"""`python -m trainers.cv`: cross-validated staging metrics for one configuration.

Manifest (or the embedded phantom cohort) -> validated cohort -> cached ROI slices -> folds written once ->
k fold models trained in lockstep -> per-fold AUC, pooled out-of-fold `cv_auc` and the study's metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainers.backbones import BACKBONES, check_resolution
from trainers.cache import cache_root
from trainers.cli import HelpFormatter
from trainers.config import TrainConfig
from trainers.data import SliceData, build_slice_data
from trainers.folds import FoldsMismatchError, load_or_make_folds
from trainers.manifest import Cohort, ManifestError, load_manifest
from trainers.metrics import summary_metrics
from trainers.preprocess import PreprocessParams, ScanROI, load_rois
from trainers.pretrained import resolve_weights
from trainers.privacy import no_telemetry
from trainers.train import CVResult, cross_validate


@dataclass
class PreparedCohort:
    """A validated cohort with its cached ROI slices and its folds: everything trials share."""

    cohort: Cohort
    rois: list[ScanROI]
    folds: list[dict[str, list[str]]]
    folds_path: Path
    cohort_hash: str

    def slice_data(self, resolution: int, channels: int = 1) -> SliceData:
        """Slices at a trial's resolution (cheap: resizes cached arrays)."""
        return build_slice_data(self.rois, resolution, channels)


def resolve_manifest(manifest: str | Path | None, phantom_patients: int = 112, seed: int = 0) -> Path:
    """The given manifest, or the embedded phantom cohort (generated once into the cache)."""
    if manifest is not None:
        return Path(manifest)
    from trainers.phantom import default_cohort

    return default_cohort(patients=phantom_patients, seed=seed)


def prepare_cohort(
    manifest: str | Path,
    folds: int = 5,
    fold_seed: int = 0,
    cv_group: str = "patient",
    folds_path: str | Path | None = None,
    params: PreprocessParams | None = None,
    cohort: Cohort | None = None,
    exclude: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
) -> PreparedCohort:
    """Validate (raises ManifestError), preprocess through the cache and load or write the folds.

    Patients in `exclude` (a held-out test set) are left out of the folds and of the ROI slices. With `rename`
    (patient id -> pseudonym, every patient) the folds are made on the real ids, so they are the folds the
    same study would get without it, but the folds file, the ROI slices and the returned cohort carry only
    the new names; `cohort_hash` stays the hash of the real (kept) cohort.
    """
    cohort = cohort or load_manifest(manifest, folds=folds, cv_group=cv_group)
    if exclude:
        dropped = set(exclude)
        cohort = dataclasses.replace(
            cohort, scans=tuple(s for s in cohort.scans if s.patient_id not in dropped)
        )
    chash = cohort.content_hash()
    if folds_path is None:
        folds_path = cache_root() / "folds" / f"{chash}-k{folds}-s{fold_seed}-{cv_group}.json"
    labels = cohort.patient_labels()
    split = load_or_make_folds(
        folds_path, labels, cohort.patient_groups(cv_group), folds, fold_seed, chash, cv_group, rename
    )
    if rename is not None:
        cohort = cohort.renamed(rename)
    rois = load_rois(cohort, params)
    return PreparedCohort(cohort, rois, split, Path(folds_path), chash)


def per_site_metrics(result: CVResult, cohort: Cohort) -> dict[str, dict[str, float]]:
    """Out-of-fold metrics for each site, when the manifest names sites."""
    sites = {s.patient_id: s.site for s in cohort.scans if s.site}
    if not sites:
        return {}
    out = {}
    for site in sorted(set(sites.values())):
        rows = [r for r in result.oof if sites.get(r["patient_id"]) == site]
        y = np.asarray([r["label"] for r in rows])
        p = np.asarray([r["prob"] for r in rows])
        out[site] = {"patients": len(rows), **summary_metrics(y, p)}
    return out


def format_table(result: CVResult, folds: list[dict]) -> str:
    """Fold table and headline metrics as printed by the CLI."""
    lines = [f"{'fold':>4}  {'val patients':>12}  {'AUC':>6}"]
    for i, (split, a) in enumerate(zip(folds, result.fold_auc, strict=True)):
        lines.append(f"{i:>4}  {len(split['val']):>12}  {a:6.3f}")
    m = result.metrics
    lines += [
        f"fold AUC mean ± sd: {result.fold_auc_mean:.3f} ± {result.fold_auc_sd:.3f}",
        f"cv_auc (pooled out-of-fold, patient level): {result.cv_auc:.3f}",
        f"at 0.5:    accuracy {m['accuracy']:.3f}  precision {m['precision']:.3f}  "
        f"recall {m['recall']:.3f}  F1 {m['f1']:.3f}",
        f"at Youden ({m['youden_threshold']:.3f}): accuracy {m['accuracy_youden']:.3f}  "
        f"precision {m['precision_youden']:.3f}  recall {m['recall_youden']:.3f}  F1 {m['f1_youden']:.3f}",
        f"backbone {result.config['backbone']} ({result.family}), "
        f"{'ImageNet-pretrained' if result.pretrained else 'random init'}: {result.pretrained_note}",
        f"{result.epochs_completed} epochs on {result.device} in {result.seconds:.1f} s",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """CLI flags; defaults shown in --help."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m trainers.cv",
        description="Cross-validated T1-vs-T2 staging metrics for one configuration. Without --manifest, "
        "runs on the embedded phantom MRI cohort.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--manifest", help="cohort CSV: patient_id,image,mask,label[,site] (default: phantom cohort)"
    )
    p.add_argument("--phantom-patients", type=int, default=112, help="size of the phantom cohort")
    p.add_argument("--backbone", default=d.backbone, help=f"one of: {', '.join(BACKBONES)}")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument(
        "--aug-strength", type=float, default=d.aug_strength, help="0 = no augmentation, 1 = strongest"
    )
    p.add_argument("--resolution", type=int, default=d.resolution, help="input size in pixels")
    p.add_argument("--channels", type=int, choices=(1, 3), default=d.channels, help="1 slice, or 3 (2.5D)")
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="ImageNet weights: from the local caches, else downloaded first (not with HF_HUB_OFFLINE=1)",
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cv-group", choices=("patient", "site"), default="patient", help="what folds keep apart")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32"),
        default=d.precision,
        help="auto: bf16 autocast + channels_last on CUDA, fp32 on the CPU",
    )
    p.add_argument("--json", type=Path, help="write the summary (metrics, folds, out-of-fold table) here")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Frozen config from CLI flags (raises ValueError on bad values)."""
    cfg = TrainConfig(
        backbone=args.backbone,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        epochs=args.epochs,
        aug_strength=args.aug_strength,
        resolution=args.resolution,
        channels=args.channels,
        pretrained=args.pretrained,
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        precision=args.precision,
    )
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; known: {', '.join(BACKBONES)}")
    check_resolution(cfg.backbone, cfg.resolution)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print a message and return 2 before any training."""
    args = build_parser().parse_args(argv)
    no_telemetry()
    try:
        cfg = config_from_args(args)
        if args.folds < 2:
            raise ValueError(f"--folds must be >= 2 (got {args.folds})")
        manifest = resolve_manifest(args.manifest, args.phantom_patients, 0)
        prepared = prepare_cohort(manifest, args.folds, args.seed, args.cv_group)
    except (ValueError, KeyError, ManifestError, FoldsMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.pretrained:  # fetched once before training, as the search's driver does (trainers.pretrained)
        for line in resolve_weights([cfg.backbone], log=print).notes():
            print(line)
    cohort = prepared.cohort
    labels = cohort.patient_labels()
    n_t2 = sum(labels.values())
    print(
        f"cohort {manifest}: {len(labels)} patients (T1 {len(labels) - n_t2}, T2 {n_t2}), "
        f"{len(prepared.folds)} folds grouped by {args.cv_group} -> {prepared.folds_path}",
        flush=True,
    )
    data = prepared.slice_data(cfg.resolution, cfg.channels)
    result = cross_validate(data, prepared.folds, cfg, log=lambda s: print(s, flush=True))
    print(format_table(result, prepared.folds))
    if args.json:
        summary: dict[str, Any] = result.to_dict()
        summary.update(
            manifest=str(manifest),
            cohort_hash=prepared.cohort_hash,
            folds=prepared.folds,
            per_site=per_site_metrics(result, cohort),
            train_slices_per_epoch=sum(len(data.indices_of(f["train"])) for f in prepared.folds),
            slices=len(data.x),
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1, default=_json_default))
        print(f"summary written to {args.json}")
    return 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    raise TypeError(f"not JSON serialisable: {type(obj)}")


if __name__ == "__main__":
    sys.exit(main())
