"""A study folder `runs/<study>/`: its paths, its format version, its files, and its stores' default places.

Resolving `--runs-dir/--study/--storage/--tracking-uri` against these defaults: `search.study.locations`; its
`config.json`, typed: `search.study.config`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.atomic import atomic_path

#: Layout of a study folder. 1: folders made before the version was recorded (no trials/, leaderboard.json
#: without a schema); 2: `format` in config.json, `trials/<number>/oof.csv`, leaderboard.json schema 1.
FORMAT_VERSION = 2
#: Version of the `leaderboard.json` document (see `Leaderboard.to_json`); bump when a key changes meaning.
LEADERBOARD_SCHEMA = 1
#: Optuna user attributes set on trials by the search (the report and the refit read them back).
INTERRUPTED_ATTR = "interrupted"
FAMILY_ATTR = "family"
MLFLOW_RUN_ATTR = "mlflow_run_id"
CONFIG_ATTR = (
    "config"  # the whole sampled configuration, fixed choices included (trial.params has only the sampled)
)
FAIL_REASON_ATTR = (
    "fail_reason"  # why a trial failed: nan_loss, out_of_memory, unreadable_data, exception, worker_error
)
ERROR_ATTR = "error"  # a failed trial's error, one short line
#: a trial of the study's comparison (queued first, run to its last epoch): Optuna user attribute, and config key
COMPARISON_ATTR = "comparison"
BATCH_SIZE_ATTR = (
    "batch_size"  # the batch size a trial trained with (half its sampled one after running out of memory)
)
#: Key of a Tune trial's config holding its Optuna trial number.
OPTUNA_NUMBER_KEY = "_optuna_trial"
OOF_COLUMNS = ("patient_id", "label", "prob", "fold", "epoch")


class StudyFormatError(Exception):
    """A study folder this version cannot use (made by a newer version, or damaged); the message says what to do."""


@dataclass(frozen=True)
class StudyPaths:
    """Every file a study writes, under one folder (the default MLflow store lives one level up, shared)."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def folds(self) -> Path:
        return self.root / "folds.json"

    @property
    def holdout(self) -> Path:
        return self.root / "holdout.json"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"

    @property
    def salt(self) -> Path:
        """The salt of a pseudonymised study (`search.study.pseudonyms`); it never leaves this folder."""
        return self.root / "pseudonym_salt"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def leaderboard(self) -> Path:
        return self.root / "leaderboard.json"

    @property
    def winner(self) -> Path:
        return self.root / "winner.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def explain(self) -> Path:
        """The registered model's input and saliency figures (`search.models.explain`)."""
        return self.root / "explain"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    def oof(self, number: int) -> Path:
        """Out-of-fold table of Optuna trial `number` (written by the trial, read by tracking and the report)."""
        return self.trials / str(number) / "oof.csv"

    def models(self, number: int) -> Path:
        """Fold models of complete trial `number` as an ensemble folder (`search.study.trial_models`; the best
        only)."""
        return self.trials / str(number) / "models"

    def radiomics(self, number: int) -> Path:
        """Radiomics trial `number`'s folder: `trial.json` (its classifier, cv_auc) and `oof.csv`
        (`search.session.radiomics_trials`)."""
        return self.root / "radiomics" / str(number)

    def failure(self, number: int) -> Path:
        """Why Optuna trial `number` failed, written by the trial when it ends itself on an error (`read_failure`)."""
        return self.trials / str(number) / "failure.json"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict ({} when absent)."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, data: dict[str, Any], before_replace: Callable[[], None] | None = None) -> None:
    """Write JSON atomically (a reader never sees half a file); `before_replace` runs between writing the
    temporary file and putting it in place (a test's kill point)."""
    with atomic_path(path) as tmp:  # a full disk or a kill leaves no half file (trainers.atomic)
        tmp.write_text(json.dumps(data, indent=1, default=str))
        if before_replace is not None:
            before_replace()


def read_failure(paths: StudyPaths, number: int) -> dict[str, Any] | None:
    """Trial `number`'s failure record {reason, error, traceback, batch_size, ...}, None when it did not fail."""
    data = read_json(paths.failure(number))
    return data or None


def write_oof(path: Path, rows: Iterable[dict[str, Any]], epoch: int) -> None:
    """A trial's out-of-fold table (patient_id, label, prob, fold) at `epoch`, written atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(OOF_COLUMNS))
        writer.writeheader()
        writer.writerows({**{k: r[k] for k in OOF_COLUMNS[:-1]}, "epoch": epoch} for r in rows)


def read_oof(path: Path) -> list[dict[str, Any]] | None:
    """Rows of a `write_oof` table with typed label, prob, fold and epoch (None when there is no table)."""
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        return [
            {
                "patient_id": r["patient_id"],
                "label": int(r["label"]),
                "prob": float(r["prob"]),
                "fold": int(r["fold"]),
                "epoch": int(r["epoch"]),
            }
            for r in csv.DictReader(fh)
        ]


def read_radiomics(paths: StudyPaths) -> dict[int, dict[str, Any]]:
    """The study's radiomics trials: number -> {config, cv_auc, seconds}, those with an out-of-fold table."""
    root = paths.root / "radiomics"
    out: dict[int, dict[str, Any]] = {}
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            if sub.name.isdigit() and (sub / "oof.csv").is_file():
                out[int(sub.name)] = json.loads((sub / "trial.json").read_text())
        except (OSError, ValueError):
            continue
    return dict(sorted(out.items()))


def default_storage_url(paths: StudyPaths) -> str:
    """sqlite Optuna storage inside the study folder."""
    return f"sqlite:///{paths.optuna_db.resolve()}"


def default_tracking_uri(runs_dir: Path) -> str:
    """A sqlite MLflow store shared by all studies of a runs folder (so one registry holds them all)."""
    return f"sqlite:///{(Path(runs_dir) / 'mlflow.db').resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (None for other databases or in-memory sqlite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def studies_in(runs_dir: Path) -> list[str]:
    """Names of the studies in a runs folder, oldest first."""
    configs = sorted(Path(runs_dir).glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return [p.parent.name for p in configs]


def latest_study(runs_dir: Path) -> str | None:
    """Name of the most recently started study in `runs_dir` (for a bare `--resume`)."""
    names = studies_in(runs_dir)
    return names[-1] if names else None


# --- the folder's format version ----------------------------------------------------------------------------


def folder_format(config: dict[str, Any]) -> int:
    """Format version of a study folder from its config (1 when it predates the version)."""
    return int(config.get("format", 1))


def check_format(config: dict[str, Any], where: Path) -> int:
    """The folder's format when this version can use it; StudyFormatError saying what to do otherwise."""
    found = folder_format(config)
    if found > FORMAT_VERSION:
        raise StudyFormatError(
            f"study folder {where} has format {found}, newer than this stagesearch understands "
            f"({FORMAT_VERSION}): upgrade stagesearch (pip install -U stagesearch) to use it"
        )
    missing = [k for k in ("settings", "manifest_path", "cohort_hash") if k not in config]
    if missing:
        raise StudyFormatError(
            f"study folder {where}: config.json lacks {', '.join(missing)} (not written by `stagesearch run`, or "
            "damaged); start a new --study"
        )
    return found
