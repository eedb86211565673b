"""The report's cohort table: patients per stage and per site, searched (cross-validated) and held out.

Labels and sites come from the study's manifest (`config.json`'s `manifest_path`, the file the search read;
ids renamed to the study's pseudonyms when it is pseudonymised), checked against the patients of `folds.json`
and `holdout.json`. Where the manifest is gone or no longer matches, the stages come from the study folder
itself (the winner's out-of-fold table, the registered winner's held-out predictions), without sites.
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from pathlib import Path

from dashboards.report_tables import export_table
from search.study import StudyConfig, StudyFormatError, StudyPaths, read_config, read_json, read_oof
from search.study.pseudonyms import study_pseudonyms

LABELS = {"T1": 0, "T2": 1, "0": 0, "1": 1}  # the manifest's label values (trainers.manifest.LABEL_VALUES)
NO_SITE = "-"


def split_of(paths: StudyPaths) -> tuple[set[str], set[str]]:
    """(search patients, held-out patients) as the study folder names them."""
    folds = read_json(paths.folds).get("folds") or []
    return {p for f in folds for p in f.get("val", [])}, set(read_json(paths.holdout).get("patients") or [])


def from_manifest(config: StudyConfig, paths: StudyPaths) -> tuple[dict[str, tuple[int, str]] | None, str]:
    """Patient (as the study names it) -> (stage, site) from the manifest, or None and why not."""
    where = config.manifest_path
    if not where or not Path(where).is_file():
        return None, f"the study's manifest {where or '(not recorded)'} is not there"
    found: dict[str, tuple[int, str]] = {}
    with Path(where).open(newline="") as fh:
        for row in csv.DictReader(fh):
            label = LABELS.get(str(row.get("label", "")).strip().upper())
            if row.get("patient_id") and label is not None:
                found[row["patient_id"].strip()] = (label, (row.get("site") or "").strip() or NO_SITE)
    try:
        rename = study_pseudonyms(config, paths, found) or {}
    except StudyFormatError as exc:
        return None, str(exc)
    return {rename.get(p, p): v for p, v in found.items()}, f"the study's manifest ({Path(where).name})"


def from_folder(
    paths: StudyPaths, search: set[str], held: set[str]
) -> tuple[dict[str, tuple[int, str]], str]:
    """Stages from the out-of-fold tables and the registered winner's held-out predictions (no sites)."""
    found: dict[str, tuple[int, str]] = {}
    for table in sorted(paths.trials.glob("*/oof.csv")) if paths.trials.is_dir() else []:
        for r in read_oof(table) or []:
            found.setdefault(r["patient_id"], (int(r["label"]), NO_SITE))
        if search <= set(found):
            break
    for r in (read_json(paths.winner).get("holdout") or {}).get("predictions") or []:
        found.setdefault(r["patient_id"], (int(r["label"]), NO_SITE))
    return found, "the trials' out-of-fold tables and the held-out predictions (sites unknown)"


def cohort_rows(labels: dict[str, tuple[int, str]], search: set[str], held: set[str]) -> list[list[str]]:
    """Per site, then all sites: T1, T2 and all patients, searched and held out, and the total."""
    count = Counter(
        (site, part, label)
        for part, ids in (("search", search), ("held", held))
        for p in ids
        if p in labels
        for label, site in [labels[p]]
    )
    sites = sorted({site for site, _, _ in count})
    rows = []
    for site in [*sites, None] if len(sites) > 1 or sites != [NO_SITE] else [None]:

        def n(part: str, label: int | None, site: str | None = site) -> int:
            return sum(
                v
                for (s, pa, la), v in count.items()
                if (site is None or s == site) and pa == part and (label is None or la == label)
            )

        cells = [n(part, label) for part in ("search", "held") for label in (0, 1, None)]
        rows.append(["all sites" if site is None else site, *map(str, cells), str(cells[2] + cells[5])])
    return rows


def cohort_section(paths: StudyPaths, out: Path) -> str:
    """`<h2>Cohort</h2>` and its table (CSV, LaTeX)."""
    head = "<h2>Cohort</h2>"
    config = read_config(paths)
    search, held = split_of(paths)
    if not search:
        return f"{head}<p>No folds yet (folds.json), so no cohort table.</p>"
    labels, source = from_manifest(config, paths)
    note = ""
    if labels is None or not (search | held) <= set(labels):
        why = source if labels is None else "the manifest no longer names every patient of the study"
        labels, source = from_folder(paths, search, held)
        note = f" ({html.escape(why)})"
    missing = len((search | held) - set(labels))
    gap = (
        f" {missing} patient(s) of the study have no known stage here and are not counted." if missing else ""
    )
    table = export_table(
        out,
        "cohort",
        [
            "site",
            "search T1",
            "search T2",
            "search all",
            "held-out T1",
            "held-out T2",
            "held-out all",
            "total",
        ],
        cohort_rows(labels, search, held),
    )
    return (
        f"{head}<p>Patients per stage and site: the search patients (cross-validated by every trial) and the "
        f"held-out ones (never seen by a trial). Stages and sites from {html.escape(source)}{note}.{gap}</p>"
        + table
    )
