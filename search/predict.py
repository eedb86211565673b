"""`stagesearch predict`: P(T2) and stage for new patients, from a model in the MLflow Model Registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def build_parser() -> argparse.ArgumentParser:
    """Flags: the model, the scans, where the registry is."""
    from search.study import add_location_flags

    p = argparse.ArgumentParser(
        prog="stagesearch predict",
        description="Predict T-stage (P(T2)) for new scans with a registered model. Inputs are validated like "
        "training inputs before the model is loaded.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="models:/cervical-staging@champion", help="registry model URI")
    p.add_argument("--image", type=Path, help="one scan: NIfTI file, DICOM series folder or PNG/JPEG")
    p.add_argument("--mask", type=Path, help="its tumour mask (optional)")
    p.add_argument("--patient-id", default="patient", help="name printed for --image")
    p.add_argument(
        "--manifest", type=Path, help="CSV with patient_id,image[,mask] (a label column is ignored)"
    )
    p.add_argument("--out", type=Path, help="write the predictions as CSV here")
    add_location_flags(p, study_required=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Validate inputs (exit 2 on problems), load the model from the registry, print one line per patient."""
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
    import pandas as pd

    from trainers.manifest import ManifestError, check_scan_files, load_manifest

    if args.manifest is not None:
        try:
            cohort = load_manifest(args.manifest, folds=2, labelled=False)
        except ManifestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rows = [{"patient_id": s.patient_id, "image": str(s.image), "mask": str(s.mask) if s.mask else ""}
                for s in cohort.scans]  # fmt: skip
    else:
        problems = check_scan_files(args.image, args.mask) if args.image.exists() else [
            f"image file not found: {args.image}"]  # fmt: skip
        if args.mask is not None and not args.mask.exists():
            problems.append(f"mask file not found: {args.mask}")
        if problems:
            print(f"error: {args.patient_id}: " + "; ".join(problems), file=sys.stderr)
            return 2
        rows = [{"patient_id": args.patient_id, "image": str(args.image.resolve()),
                 "mask": str(args.mask.resolve()) if args.mask else ""}]  # fmt: skip

    import mlflow
    from mlflow.exceptions import MlflowException

    from search.study import from_args
    from search.tracking import tracking_uri

    with tracking_uri(from_args(args).tracking_url()):
        try:
            model = mlflow.pyfunc.load_model(args.model)
        except MlflowException as exc:
            print(f"error: cannot load {args.model}: {exc.message}", file=sys.stderr)
            return 2
    out = model.predict(pd.DataFrame(rows))  # one row per patient, staged at the model's own threshold
    threshold = getattr(model.unwrap_python_model(), "threshold", None)
    print(f"model {args.model}" + ("" if threshold is None else
          f": stage T2 when P(T2) >= {threshold:.3f} (the operating threshold recorded at registration)"))  # fmt: skip
    print(f"{'patient':<20} {'P(T2)':>6}  stage")
    for row in out.itertuples():
        print(f"{row.patient_id:<20} {row.p_t2:6.3f}  {row.stage}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
