"""`stagesearch predict`: P(T2) and stage for new patients, from a model in the MLflow Model Registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])


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
    add_location_flags(p, study_required=False)
    return p


def _inputs(args: argparse.Namespace) -> tuple[list[dict[str, str]], dict[str, int]] | str:
    """(rows for the model, labels by patient) from --manifest or --image; an error message when unusable."""
    from trainers.io import patient_id_from_path
    from trainers.manifest import ManifestError, check_scan_files, load_manifest

    if args.manifest is not None:
        try:
            cohort = load_manifest(args.manifest, folds=2, labelled=False)
        except ManifestError as exc:
            return str(exc)
        labels: dict[str, set[int]] = {}
        for s in cohort.scans:
            labels.setdefault(s.patient_id, set()).add(s.label)
        mixed = sorted(p for p, found in labels.items() if len(found) > 1)
        if mixed:
            return (
                f"{args.manifest}: patient(s) {', '.join(mixed)} have scans with different (or blank) labels"
            )
        rows = [
            {"patient_id": s.patient_id, "image": str(s.image), "mask": str(s.mask) if s.mask else ""}
            for s in cohort.scans
        ]
        return rows, {p: found.pop() for p, found in labels.items()}
    pid = args.patient_id or patient_id_from_path(args.image)
    problems = (
        check_scan_files(args.image, args.mask)
        if args.image.exists()
        else [f"image file not found: {args.image}"]
    )
    if args.mask is not None and not args.mask.exists():
        problems.append(f"mask file not found: {args.mask}")
    if problems:
        return f"{pid}: " + "; ".join(problems)
    rows = [
        {
            "patient_id": pid,
            "image": str(args.image.resolve()),
            "mask": str(args.mask.resolve()) if args.mask else "",
        }
    ]
    return rows, {}


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
    found = _inputs(args)
    if isinstance(found, str):
        print(f"error: {found}", file=sys.stderr)
        return 2
    rows, labels = found
    loaded = _load(args)
    if isinstance(loaded, str):
        print(f"error: {loaded}", file=sys.stderr)
        return 2
    model, version = loaded
    import pandas as pd

    threshold = float(model.unwrap_python_model().threshold)
    out = model.predict(pd.DataFrame(rows))  # one row per patient, staged at the model's own threshold
    digits = shown_digits(list(out["p_t2"]), threshold)
    for line in _model_lines(args.model, version, threshold, digits):
        print(line)
    _print_predictions(out, labels, threshold, digits)
    if args.out:
        if labels:
            out.insert(1, "label", [{0: "T1", 1: "T2"}.get(labels.get(p, -1), "") for p in out["patient_id"]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        print(f"written to {args.out}")
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, Any] | str:
    """(the pyfunc model, the registered version it is) for --model; a message with the command that helps
    when the URI resolves to nothing (e.g. no version promoted to the alias yet)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from search.registry import RegistryError, resolve_uri
    from search.study import from_args, where_flags
    from search.tracking import tracking_uri

    where = from_args(args)
    client = MlflowClient(where.tracking_url(), where.tracking_url())
    try:
        version = resolve_uri(client, args.model, where_flags(where))
    except RegistryError as exc:
        return str(exc)
    except MlflowException as exc:
        return f"cannot resolve {args.model} in the registry at {where.tracking_uri}: {exc.message}"
    with tracking_uri(where.tracking_url()):
        try:  # the very version printed, even if the alias moves meanwhile
            return mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}"), version
        except MlflowException as exc:
            return f"cannot load {args.model}: {exc.message}"


def shown_digits(probs: list[float], threshold: float) -> int:
    """Decimals to print P(T2) and the threshold with: 4, or more where fewer would make a patient staged T1
    look at or above the printed threshold (probabilities of small models crowd around the cut)."""
    for digits in range(4, 9):
        if all((round(p, digits) >= round(threshold, digits)) == (p >= threshold) for p in probs):
            return digits
    return 9


def _model_lines(uri: str, version: Any, threshold: float, digits: int = 4) -> list[str]:
    """Which registered version `uri` resolved to, its aliases and provenance, and the threshold it stages at."""
    from search.version_tags import chance_note

    tags = dict(version.tags or {})
    aliases = " ".join(f"@{a}" for a in sorted(version.aliases or [])) or "no alias"
    made = ", ".join(
        x
        for x in [
            f"study {tags['study']}" if "study" in tags else "",
            f"trial {tags['trial']}" if "trial" in tags else "",
            tags.get("backbone", ""),
        ]
        if x
    )
    lines = [
        f"model: {uri} -> {version.name} version {version.version} ({aliases})"
        + (f"; {made}" if made else "")
    ]
    rule = tags.get("threshold_rule")
    lines.append(
        f"threshold: stage T2 when P(T2) >= {threshold:.{digits}f} (the operating threshold recorded at "
        f"registration{': ' + rule if rule else ''})"
    )
    note = chance_note(tags)
    if note:
        lines.append(f"warning: {note}")
    return lines


def _print_predictions(out: Any, labels: dict[str, int], threshold: float, digits: int = 4) -> None:
    """One line per patient (with its label when given), then the score against the labels."""
    from search.predict_scores import label_score

    width = max([20, *(len(str(p)) for p in out["patient_id"])])
    given = any(v in (0, 1) for v in labels.values())
    print(f"{'patient_id':<{width}} {'P(T2)':>{digits + 2}}  stage" + ("  label" if given else ""))
    for row in out.itertuples():
        label = {0: "T1", 1: "T2"}.get(labels.get(row.patient_id, -1), "-")
        print(
            (
                f"{row.patient_id:<{width}} {row.p_t2:.{digits}f}  {row.stage:<5}"
                + (f"  {label}" if given else "")
            ).rstrip()
        )
    score = (
        label_score(list(out["patient_id"]), list(out["p_t2"]), labels, threshold, digits=digits)
        if given
        else None
    )
    if score is not None:
        missing = len(out) - score.n
        print()
        for line in score.lines() + (
            [f"({missing} patient(s) without a label not scored)"] if missing else []
        ):
            print(line)


if __name__ == "__main__":
    sys.exit(main())
