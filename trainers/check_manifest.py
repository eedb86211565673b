"""Validate a cohort manifest without training: ``stagesearch check-manifest CSV [--folds K] [--cv-group G]``.

Prints a summary of the cohort (exit 0) or every problem on stderr (exit 2), one scan under two ids included
(`trainers.duplicates`). Also ``python -m trainers.check_manifest``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from trainers.duplicates import checked_manifest
from trainers.manifest import CV_GROUPS, Cohort, ManifestError


def summary(cohort: Cohort) -> str:
    """One-screen text summary of a validated cohort (patients, scans, classes, sites, masks, hash)."""
    labels = cohort.patient_labels()
    counts = Counter(labels.values())
    n_scans = len(cohort.scans)
    lines = [
        f"manifest: {cohort.manifest}",
        f"patients: {len(labels)} (T1: {counts[0]}, T2: {counts[1]})",
        f"scans:    {n_scans}",
    ]
    site_counts = Counter(s.site for s in cohort.scans if s.site)
    if site_counts:
        listed = ", ".join(f"{site}: {n}" for site, n in sorted(site_counts.items()))
        lines.append(f"sites:    {len(site_counts)} ({listed} scans)")
    else:
        lines.append("sites:    none given")
    lines.append(f"masks:    {sum(s.mask is not None for s in cohort.scans)} of {n_scans} scans")
    lines.append(f"hash:     {cohort.content_hash()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: validate a manifest, print a summary (exit 0) or its problems (exit 2)."""
    parser = argparse.ArgumentParser(prog="stagesearch check-manifest", description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="manifest CSV (patient_id,image,mask,label[,site])")
    parser.add_argument(
        "--folds", type=int, default=5, help="number of CV folds to check class counts against"
    )
    parser.add_argument("--cv-group", choices=CV_GROUPS, default="patient", help="CV grouping unit")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    try:
        cohort = checked_manifest(args.csv, folds=args.folds, cv_group=args.cv_group)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(summary(cohort))
    print(f"OK for {args.folds}-fold CV grouped by {args.cv_group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
