"""Load and fully validate a cohort manifest CSV (patient_id,image,mask,label[,site]) before any training.

Every problem (file, column, row, image, cohort level) is collected and raised together as one
ManifestError, so a user fixes the whole manifest in one pass.  Labels: ``T1``/``T2`` (case-insensitive)
or ``0``/``1``; T2 = 1 is the positive class.  Relative paths resolve against the manifest's folder.
Row numbers in messages are line numbers of the file (the header is row 1).

The command line (``stagesearch check-manifest``) is `trainers.check_manifest`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from trainers.io import check_scan_files, patient_id_from_path, scan_problems, source_files  # noqa: F401  (re-exported)

REQUIRED_COLUMNS = ("patient_id", "image", "label")
LABEL_VALUES = {"T1": 0, "T2": 1, "0": 0, "1": 1}
CLASS_NAMES = {0: "T1", 1: "T2"}
CV_GROUPS = ("patient", "site")
_ALLOWED_LABELS = "allowed: T1, T2, 0, 1 (case-insensitive; T2 = 1 is the positive class)"


class ManifestError(Exception):
    """Everything wrong with a manifest, collected so all problems can be reported and fixed at once."""

    def __init__(self, manifest: str | Path, problems: list[str]) -> None:
        self.manifest = Path(manifest)
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        """Render as 'manifest PATH: N problems:' followed by one indented line per problem."""
        n = len(self.problems)
        lines = [f"manifest {self.manifest}: {n} problem{'' if n == 1 else 's'}:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class Scan:
    """One validated manifest row: a patient's image (+ optional mask) with its T-stage label."""

    patient_id: str
    image: Path
    mask: Path | None
    label: int
    site: str | None


@dataclass(frozen=True)
class Cohort:
    """The validated scans of a manifest, with per-patient views used for grouped cross-validation."""

    manifest: Path
    scans: tuple[Scan, ...]

    @property
    def patients(self) -> list[str]:
        """Unique patient ids in order of first appearance (stable split inputs)."""
        return list(dict.fromkeys(s.patient_id for s in self.scans))

    def patient_labels(self) -> dict[str, int]:
        """Map patient id to label (0 = T1, 1 = T2); rows of one patient are guaranteed to agree."""
        return {s.patient_id: s.label for s in self.scans}

    def patient_groups(self, by: str = "patient") -> dict[str, str]:
        """Map patient id to its CV group key ('patient': itself, 'site': its site) so folds never split it."""
        if by == "patient":
            return {p: p for p in self.patients}
        if by != "site":
            raise ValueError(f"unknown grouping {by!r} (expected one of {', '.join(CV_GROUPS)})")
        groups: dict[str, str] = {}
        for s in self.scans:
            if s.site is None:
                raise ValueError(
                    f"patient {s.patient_id} has no site; load the manifest with cv_group='site'"
                )
            if groups.setdefault(s.patient_id, s.site) != s.site:
                raise ValueError(f"patient {s.patient_id} is listed at several sites")
        return groups

    def renamed(self, names: Mapping[str, str]) -> Cohort:
        """The same scans under other patient ids (`names`: id -> new id for every patient, e.g. pseudonyms)."""
        return dataclasses.replace(
            self, scans=tuple(dataclasses.replace(s, patient_id=names[s.patient_id]) for s in self.scans)
        )

    def content_hash(self) -> str:
        """Short sha256 of rows plus each file's size and mtime_ns, to detect a changed cohort between runs."""
        h = hashlib.sha256()
        for s in self.scans:
            fields = [s.patient_id, str(s.image), str(s.mask or ""), str(s.label), s.site or ""]
            h.update(("\x1f".join(fields) + "\n").encode())
            for path in (s.image, s.mask):
                if path is not None:
                    h.update(_file_stamps(path).encode())
        return h.hexdigest()[:16]


def _file_stamps(path: Path) -> str:
    """Size and mtime_ns of a file, or of every file load_image would read from a DICOM folder."""
    parts = []
    try:
        for f in source_files(path):
            st = f.stat()
            parts.append(f"{f.name}\x1f{st.st_size}\x1f{st.st_mtime_ns}")
    except OSError:
        parts.append("<missing>")
    return "\x1e".join(parts) + "\n"


@dataclass
class _Row:
    """A parsed manifest row before cohort-level checks; None marks a value that failed validation."""

    line: int
    patient_id: str
    image_raw: str
    image: Path | None
    mask_raw: str
    mask: Path | None
    label: int | None
    site: str | None

    @property
    def who(self) -> str:
        """How messages name this row: by patient (and row) when the id is known, else by row."""
        return f"patient {self.patient_id} (row {self.line})" if self.patient_id else f"row {self.line}"


def _read_table(manifest: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read the CSV into (normalised header, [(line, cells)]), raising ManifestError if it is not a CSV."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(manifest, ["manifest file not found"]) from None
    except IsADirectoryError:
        raise ManifestError(manifest, ["manifest path is a folder, not a CSV file"]) from None
    except UnicodeDecodeError:
        raise ManifestError(
            manifest, ["not a text CSV file (not UTF-8: a spreadsheet or binary file?)"]
        ) from None
    except OSError as exc:
        raise ManifestError(manifest, [f"cannot read manifest ({exc.strerror or exc})"]) from None
    if "\x00" in text:
        raise ManifestError(manifest, ["not a text CSV file (contains NUL bytes)"])
    reader = csv.reader(StringIO(text))
    table: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                table.append((reader.line_num, cells))
    except csv.Error as exc:
        raise ManifestError(manifest, [f"not a valid CSV file (row {reader.line_num}: {exc})"]) from None
    if not table:
        raise ManifestError(manifest, ["manifest is empty (no header row)"])
    header = [c.strip().lower() for c in table[0][1]]
    return header, table[1:]


def _column_problems(header: list[str], cv_group: str, labelled: bool = True) -> list[str]:
    """Problems with the header: duplicates, missing required columns, missing site for site-grouped CV."""
    problems = []
    dupes = sorted(c for c, n in Counter(header).items() if n > 1 and c)
    if dupes:
        problems.append(f"duplicate column(s): {', '.join(dupes)}")
    missing = [
        c for c in REQUIRED_COLUMNS if c not in header and (labelled or c not in ("label", "patient_id"))
    ]
    if missing:
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            hint = " (the file does not look comma-separated)"
        found = ", ".join(h for h in header if h) or "none"
        problems.append(f"missing required column(s): {', '.join(missing)}{hint}; found: {found}")
    if cv_group == "site" and "site" not in header:
        problems.append("missing column 'site', required for cv_group='site'")
    return problems


def _resolve(base: Path, raw: str) -> Path:
    """Resolve a manifest path: absolute as is, relative against the manifest's folder, normalised."""
    p = Path(raw).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _parse_row(
    line: int,
    cells: list[str],
    header: list[str],
    base: Path,
    cv_group: str,
    problems: list[str],
    labelled: bool = True,
) -> _Row:
    """Turn one CSV row into a _Row, appending every value problem (blank id, bad label, missing file)."""
    value = {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(header)}
    row = _Row(
        line,
        value.get("patient_id", ""),
        value.get("image", ""),
        None,
        value.get("mask", ""),
        None,
        None,
        None,
    )
    row.site = value.get("site") or None
    if len(cells) > len(header):
        problems.append(f"{row.who}: {len(cells)} fields but the header has {len(header)} (unquoted comma?)")
    if "patient_id" in header and not row.patient_id:
        problems.append(f"row {line}: blank patient_id")
    if "image" in header:
        if not row.image_raw:
            problems.append(f"{row.who}: blank image path")
        elif not (path := _resolve(base, row.image_raw)).exists():
            problems.append(f"{row.who}: image file not found: {row.image_raw}")
        else:
            row.image = path  # scans to predict may come without ids: named by their files
            row.patient_id = row.patient_id if "patient_id" in header else patient_id_from_path(path)
    if row.mask_raw:
        if not (path := _resolve(base, row.mask_raw)).exists():
            problems.append(f"{row.who}: mask file not found: {row.mask_raw}")
        else:
            row.mask = path
    if "label" in header and (labelled or value["label"]):  # to predict: a label where given (scored if all)
        raw = value["label"]
        row.label = LABEL_VALUES.get(raw.upper())
        if row.label is None:
            shown = f"unknown label {raw!r}" if raw else "blank label"
            problems.append(f"{row.who}: {shown}; {_ALLOWED_LABELS}")
    if cv_group == "site" and "site" in header and not row.site:
        problems.append(f"{row.who}: blank site (required for cv_group='site')")
    return row


def _cohort_problems(rows: list[_Row], folds: int, cv_group: str, has_site: bool) -> list[str]:
    """Cross-row problems: conflicting labels/sites, shared images, single class, too few patients or sites."""
    problems = []
    by_patient: dict[str, list[_Row]] = {}
    for r in rows:
        if r.patient_id:
            by_patient.setdefault(r.patient_id, []).append(r)
    users: dict[Path, list[_Row]] = {}
    for r in rows:
        if r.image is not None:
            users.setdefault(r.image, []).append(r)
    for rs in users.values():
        if len(rs) > 1:
            listed = ", ".join(f"patient {r.patient_id or '?'} (row {r.line})" for r in rs)
            problems.append(f"image {rs[0].image_raw} is listed {len(rs)} times: {listed}")
    labels: dict[str, int] = {}
    for pid, rs in by_patient.items():
        valid = [r for r in rs if r.label is not None]
        if len({r.label for r in valid}) > 1:
            listed = ", ".join(f"{CLASS_NAMES[r.label]} (row {r.line})" for r in valid)
            problems.append(f"patient {pid}: conflicting labels across rows: {listed}")
        elif valid:
            labels[pid] = valid[0].label
        if cv_group == "site" and len({r.site for r in rs if r.site}) > 1:
            listed = ", ".join(f"{r.site} (row {r.line})" for r in rs if r.site)
            problems.append(f"patient {pid}: rows disagree on site: {listed}")
    # Patients whose label is unknown (invalid, conflicting, blank id) could fall in either class: report a
    # class-count problem only when it holds whatever their labels turn out to be.
    unknown = len(by_patient) - len(labels) + sum(1 for r in rows if not r.patient_id)
    counts = Counter(labels.values())
    plus = f" (plus {unknown} patient(s) with unknown label)" if unknown else ""
    if labels and len(counts) == 1 and not unknown:
        (only,) = counts
        problems.append(
            f"cohort has only one class: all {len(labels)} patients are {CLASS_NAMES[only]} (need both T1 and T2)"
        )
    elif labels and min(counts[0], counts[1]) + unknown < folds:
        problems.append(
            f"too few patients per class for {folds}-fold CV: T1 has {counts[0]}, T2 has {counts[1]}{plus} "
            f"(each class needs at least {folds})"
        )
    if cv_group == "site" and has_site:
        sites = sorted({r.site for r in rows if r.site})
        if len(sites) < folds:
            problems.append(
                f"only {len(sites)} distinct site(s) ({', '.join(sites) or 'none'}) for {folds}-fold CV grouped "
                f"by site (need at least {folds})"
            )
    return problems


def load_manifest(
    path: str | Path,
    folds: int = 5,
    cv_group: str = "patient",
    check_images: bool = True,
    labelled: bool = True,
    on_image: Callable[[Path, Any], None] | None = None,
) -> Cohort:
    """Validate a manifest (files must exist; check_images also reads them) into a Cohort or one ManifestError.

    `labelled=False` validates scans to predict: label, patient_id optional (ids from file names, blank labels -1).
    `on_image(path, voxels)` sees each image read (`trainers.duplicates` fingerprints them there).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if cv_group not in CV_GROUPS:
        raise ValueError(f"cv_group must be one of {', '.join(CV_GROUPS)}, got {cv_group!r}")
    manifest = Path(os.path.normpath(Path(path).expanduser().absolute()))
    header, table = _read_table(manifest)
    problems = _column_problems(header, cv_group, labelled)
    if not table:
        problems.append("manifest has no data rows")
    rows: list[_Row] = []
    row_problems: list[list[str]] = []
    for line, cells in table:
        found: list[str] = []
        rows.append(_parse_row(line, cells, header, manifest.parent, cv_group, found, labelled))
        row_problems.append(found)
    if check_images:
        jobs: dict[tuple[Path, Path | None], _Row] = {}
        for r in rows:
            if r.image is not None:
                jobs.setdefault((r.image, r.mask), r)  # first row reading a file reports its problems
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                k: pool.submit(scan_problems, k[0], r.image_raw, k[1], r.mask_raw, on_image)
                for k, r in jobs.items()
            }
            for r, found in zip(rows, row_problems, strict=True):
                if r.image is not None and jobs[(r.image, r.mask)] is r:
                    found.extend(f"{r.who}: {p}" for p in futures[(r.image, r.mask)].result())
    for found in row_problems:
        problems.extend(found)
    if labelled:
        problems.extend(_cohort_problems(rows, folds, cv_group, "site" in header))
    if problems:
        raise ManifestError(manifest, problems)
    scans = tuple(
        Scan(r.patient_id, r.image, r.mask, -1 if r.label is None else r.label, r.site)  # type: ignore[arg-type]
        for r in rows
    )
    return Cohort(manifest=manifest, scans=scans)
