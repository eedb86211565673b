"""P(T2) and stage for new patients from a model in the MLflow Model Registry (`stagesearch predict`): the
scans read and checked, the model resolved and loaded, the lines printed."""

from __future__ import annotations

import argparse
from typing import Any


def scan_inputs(args: argparse.Namespace) -> tuple[list[dict[str, str]], dict[str, int]] | str:
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


def load_model(args: argparse.Namespace) -> tuple[Any, Any] | str:
    """(the pyfunc model, the registered version it is) for --model; a message with the command that helps
    when the URI resolves to nothing (e.g. no version promoted to the alias yet)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from search.registry.versions import RegistryError, resolve_uri
    from search.study import from_args, where_flags
    from search.tracking.tracker import tracking_uri

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


def model_lines(uri: str, version: Any, threshold: float, digits: int = 4) -> list[str]:
    """Which registered version `uri` resolved to, its aliases and provenance, and the threshold it stages at."""
    from search.registry.version_tags import chance_note

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


def print_predictions(out: Any, labels: dict[str, int], threshold: float, digits: int = 4) -> None:
    """One line per patient (with its label when given), then the score against the labels."""
    from search.stats.predict_scores import label_score

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
