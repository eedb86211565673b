"""Does the registered model look at the tumour? The share of its saliency maps' mass inside the lesion mask.

For every patient of a registered study, the SmoothGrad map (`trainers.saliency`) of P(T2) over each ROI slice
with lesion, made by the fold model that did not train on the patient (each member's, weighted, for a deep
ensemble), and the share of its mass inside the tumour mask. Beside it, two references on the same slices: a
uniform map (its share is the mask's area share) and the same architectures randomly initialised (seed 0), so
that a map peaked at the ROI's centre, where the lesion lies by construction, proves nothing by itself.

    python -m bench.saliency --runs-dir runs --study NAME        # the study's registered version (winner.json)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench._common import write_result


def build_parser() -> argparse.ArgumentParser:
    from search.study import add_location_flags

    ap = argparse.ArgumentParser(
        prog="python -m bench.saliency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="results folder (default: bench/results/<machine>)"
    )
    add_location_flags(ap, study_required=False)
    return ap


def _random_like(ensemble: Any) -> Any:
    """The same members' architectures, weights drawn afresh (seed 0), combined the same way."""
    import torch

    from trainers.backbones import create_backbone
    from trainers.ensemble import Ensemble, WeightedEnsemble

    def fresh(member: Ensemble) -> Ensemble:
        cfg = member.config
        models = []
        for _ in member.models:
            models.append(
                create_backbone(
                    cfg.backbone,
                    in_chans=cfg.channels,
                    num_classes=2,
                    pretrained=False,
                    img_size=cfg.resolution,
                ).model.eval()
            )
        return Ensemble(models, cfg, member.params, member.threshold)

    torch.manual_seed(0)
    if isinstance(ensemble, WeightedEnsemble):
        return WeightedEnsemble([fresh(m) for m in ensemble.members], ensemble.weights, ensemble.threshold)
    return fresh(ensemble)


def measure(where: Any) -> dict[str, Any]:
    """Per patient the lesion shares of the trained and the random maps and the uniform share; their medians."""
    import mlflow

    from search.study import load_config, read_json
    from search.study.inputs import prepare_inputs
    from search.tracking.tracker import tracking_uri
    from trainers.preprocess import load_lesions
    from trainers.saliency import ensemble_map, lesion_share, mask_at

    paths = where.paths
    winner = read_json(paths.winner)
    with tracking_uri(where.tracking_url()):
        model = mlflow.pyfunc.load_model(winner["model_uri"])
    trained = model.unwrap_python_model().ensemble
    random = _random_like(trained)
    prepared = prepare_inputs(load_config(paths), paths).prepared
    fold_of = {p: i for i, f in enumerate(prepared.folds) for p in f["val"]}
    lesions = {x.patient_id: x for x in load_lesions(prepared.cohort, progress=False)}
    rows, seen = [], set()
    for roi in prepared.rois:
        lesion = lesions[roi.patient_id]
        if roi.patient_id in seen or not lesion.has_mask:
            continue
        seen.add(roi.patient_id)
        fold = fold_of[roi.patient_id]
        _, mt = ensemble_map(trained, roi, fold=fold)
        _, mr = ensemble_map(random, roi, fold=fold)
        mask = mask_at(lesion, mt.shape[-1])
        keep = [k for k in range(len(mask)) if mask[k].sum() > 0]
        rows.append(
            {
                "patient_id": roi.patient_id,
                "label": roi.label,
                "trained": statistics.mean(lesion_share(mt[k], mask[k]) for k in keep),
                "random": statistics.mean(lesion_share(mr[k], mask[k]) for k in keep),
                "uniform": statistics.mean(float(mask[k].mean()) for k in keep),
            }
        )
        print(f"  {len(rows)} patients", end="\r", flush=True)
    print()
    med = {k: statistics.median(r[k] for r in rows) for k in ("trained", "random", "uniform")}
    return {
        "model_uri": winner["model_uri"],
        "kind": winner["kind"],
        "backbone": winner["backbone"],
        "patients": len(rows),
        "median_share": med,
        "trained_over_uniform": statistics.median(r["trained"] / r["uniform"] for r in rows),
        "random_over_uniform": statistics.median(r["random"] / r["uniform"] for r in rows),
        "share_trained_above_uniform": sum(r["trained"] > r["uniform"] for r in rows) / len(rows),
        "share_trained_above_random": sum(r["trained"] > r["random"] for r in rows) / len(rows),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from search.study import from_args

    args = build_parser().parse_args(argv)
    where = from_args(args)
    if not where.paths.winner.exists():
        print(f"error: study {where.paths.name} has no registered model (winner.json)", file=sys.stderr)
        return 2
    from search.study import read_json

    if read_json(where.paths.winner).get("kind") == "radiomics":
        print("error: the registered model is a radiomics model: it has no saliency map", file=sys.stderr)
        return 2
    result = measure(where)
    m = result["median_share"]
    print(
        f"{result['patients']} patients, {result['kind']} {result['backbone']}: median share of the map inside the "
        f"lesion mask: trained {m['trained']:.3f}, random {m['random']:.3f}, uniform {m['uniform']:.3f}; trained "
        f"above uniform for {result['share_trained_above_uniform']:.0%}, above random for "
        f"{result['share_trained_above_random']:.0%} of patients"
    )
    print(f"written to {write_result('saliency', result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
