"""`stagesearch predict`: P(T2) and stage for new scans from a registered model (`search.models.predict`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from search.models.predict import (  # noqa: E402
    load_model,
    model_lines,
    print_predictions,
    scan_inputs,
    shown_digits,
)


def build_parser() -> argparse.ArgumentParser:
    """Flags: the model, the scans, where the registry is."""
    from search.study import add_location_flags
    from trainers.cli import HelpFormatter

    p = argparse.ArgumentParser(
        prog="stagesearch predict",
        description="Predict T-stage (P(T2)) for new scans with a registered model. Inputs are validated like "
        "training inputs before the model is loaded. Prints the model version the URI resolves to and the "
        "threshold it stages at; with a label column in --manifest, also the AUC (95%% CI) and the confusion "
        "matrix.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model",
        default="models:/cervical-staging@champion",
        help="registry model URI: models:/NAME@ALIAS or models:/NAME/VERSION",
    )
    p.add_argument("--image", type=Path, help="one scan: NIfTI file, DICOM series folder or PNG/JPEG")
    p.add_argument("--mask", type=Path, help="its tumour mask (optional)")
    p.add_argument("--patient-id", default=None, help="name printed for --image (default: its file name)")
    p.add_argument(
        "--manifest",
        type=Path,
        help="CSV with image[,mask][,patient_id][,label]: patient_id defaults "
        "to the image's file name; with labels (T1/T2 or 0/1) the predictions are also scored",
    )
    p.add_argument("--out", type=Path, help="write the predictions as CSV here")
    p.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="also write, per patient, its ROI slices and where the model looks (a SmoothGrad saliency map of "
        "P(T2), the fold models' mean; mask outlined) as DIR/<patient>.png and .svg; not for a radiomics model",
    )
    add_location_flags(p, study_required=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Validate inputs (exit 2 on problems), resolve and load the model, print one line per patient."""
    args = build_parser().parse_args(argv)
    if (args.image is None) == (args.manifest is None):
        print("error: give either --image (with optional --mask) or --manifest", file=sys.stderr)
        return 2
    if not args.model.startswith("models:/"):
        print(
            f"error: --model {args.model!r}: expected a registry URI such as models:/name@alias",
            file=sys.stderr,
        )
        return 2
    found = scan_inputs(args)
    if isinstance(found, str):
        print(f"error: {found}", file=sys.stderr)
        return 2
    rows, labels = found
    loaded = load_model(args)
    if isinstance(loaded, str):
        print(f"error: {loaded}", file=sys.stderr)
        return 2
    model, version = loaded
    import pandas as pd

    from trainers.radiomics_model import RadiomicsEnsemble

    ensemble = model.unwrap_python_model().ensemble
    if args.explain is not None and isinstance(ensemble, RadiomicsEnsemble):
        print(
            f"error: --explain: {args.model} is a radiomics model: it has no saliency map (it is not a network)",
            file=sys.stderr,
        )
        return 2
    threshold = float(model.unwrap_python_model().threshold)
    out = model.predict(pd.DataFrame(rows))  # one row per patient, staged at the model's own threshold
    digits = shown_digits(list(out["p_t2"]), threshold)
    for line in model_lines(args.model, version, threshold, digits):
        print(line)
    print_predictions(out, labels, threshold, digits)
    if args.out:
        if labels:
            out.insert(1, "label", [{0: "T1", 1: "T2"}.get(labels.get(p, -1), "") for p in out["patient_id"]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        print(f"written to {args.out}")
    if args.explain is not None:
        from search.models.explain import explain_scans
        from trainers.manifest import Scan

        scans = [Scan(r["patient_id"], Path(r["image"]), Path(r["mask"]) if r["mask"] else None, -1, None)
                 for r in rows]  # fmt: skip
        written = explain_scans(ensemble, scans, args.explain)
        print(f"saliency maps of {len(written)} scan(s) written to {args.explain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
