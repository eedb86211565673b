"""The fold models a complete trial trained, kept so that registering the winner does not train them again.

A trial that reaches its last epoch saves its k fold models (`trainers.ensemble.Ensemble.save`) to
`trials/<number>/models/` before it reports that epoch, then `trial.json` (its cv_auc and settings) last, so a
folder with `trial.json` is whole. The driver keeps the best complete trial's folder (`keep_best`; a
search of 200 trials would otherwise keep tens of them, 100 MB each for a small ViT) and those of the deep
ensemble's members, the best complete trials of each family, up to a disk cap
(`search.stats.candidates.PER_FAMILY`, `KEEP_MB`). Registration
(`search.models.register`) uses the folder when it belongs to the trial it registers and was trained with
the same settings, else it trains the fold models again, as before; either way the registered models are the ones
whose out-of-fold predictions gave the trial's cv_auc (a CPU refit gives the same models up to float
rounding: it trains on every core where the trial had one, and reductions add up in another order).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Any

from search.study import StudyPaths, read_oof, write_json

#: settings that decide what a fold model is; anything else (threads, device) may differ between trial and refit
MODEL_KEYS = (
    "backbone",
    "resolution",
    "channels",
    "lr",
    "weight_decay",
    "aug_strength",
    "epochs",
    "seed",
    "pretrained",
    "batch_size",
)


@dataclass
class StoredResult:
    """What registration needs of a trial's cross-validation when its fold models were kept."""

    cv_auc: float
    family: str
    pretrained: bool
    oof: list[dict[str, Any]]
    config: dict[
        str, Any
    ]  # the training config, with the batch size the trial used (half after out of memory)


def save(paths: StudyPaths, number: int, report: Any, cfg: Any) -> bool:
    """Keep the fold models of a trial's last epoch (`report.models`), trained at `cfg` (batch: the report's).

    False when they could not be written (a full disk, say): the trial is not failed for it, registration
    then trains the models again."""
    import dataclasses

    from trainers.backbones import family_of
    from trainers.ensemble import Ensemble
    from trainers.preprocess import PreprocessParams

    folder = paths.models(number)
    shutil.rmtree(folder, ignore_errors=True)  # an earlier attempt of the same trial (a restart)
    used = dataclasses.replace(cfg, batch_size=report.batch_size or cfg.batch_size)
    try:
        Ensemble(list(report.models), used, PreprocessParams()).save(folder)
        write_json(
            folder / "trial.json",
            {
                "trial": number,
                "epoch": report.epoch,
                "cv_auc": float(report.cv_auc),
                "family": family_of(cfg.backbone),
                "pretrained": bool(report.pretrained),
                "config": {k: getattr(cfg, k) for k in MODEL_KEYS},
                "used_batch_size": used.batch_size,
            },
        )
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return False
    return True


def _stored(paths: StudyPaths, number: int) -> dict[str, Any] | None:
    try:
        return json.loads((paths.models(number) / "trial.json").read_text())
    except (OSError, ValueError):
        return None


def load(
    paths: StudyPaths, number: int, cfg: Any, value: float | None
) -> tuple[Any, StoredResult | None, str]:
    """(ensemble, result, "") from trial `number`'s kept models, or (None, None, why not) when they cannot serve
    as the registered models: none kept, other settings, another cv_auc than the trial's, no matching OOF table."""
    from trainers.ensemble import Ensemble

    stored = _stored(paths, number)
    if stored is None:
        return None, None, "its fold models were not kept (only the best complete trials' are)"
    wanted = {k: getattr(cfg, k) for k in MODEL_KEYS if k != "batch_size"}
    got = {k: v for k, v in stored["config"].items() if k != "batch_size"}
    batch = {stored["config"].get("batch_size"), stored.get("used_batch_size")}  # sampled, or used after OOM
    if got != wanted or cfg.batch_size not in batch:
        return None, None, "its kept fold models were trained with other settings"
    if value is None or abs(float(stored["cv_auc"]) - float(value)) > 1e-9:
        return None, None, f"its kept fold models scored cv_auc {stored['cv_auc']}, not the trial's {value}"
    oof = read_oof(paths.oof(number))
    if not oof or any(r["epoch"] != stored["epoch"] for r in oof):
        return None, None, "its out-of-fold table is not the kept models' epoch"
    try:
        ensemble = Ensemble.load(paths.models(number))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        return None, None, f"its kept fold models cannot be loaded ({type(exc).__name__}: {exc})"
    result = StoredResult(
        float(stored["cv_auc"]), stored["family"], bool(stored["pretrained"]), oof, ensemble.config.to_dict()
    )
    return ensemble, result, ""


def _size_mb(folder: Any) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def keep_best(paths: StudyPaths, per_family: int, cap_mb: float) -> list[int]:
    """Delete the kept models of all but the `per_family` complete trials of each family with the highest cv_auc
    (the deep ensemble's members), and of those beyond `cap_mb` in all, best first (the best trial's always
    stay); the removed numbers.

    Only whole folders (with `trial.json`) take part, so a trial still writing its models is left alone.
    Ties keep the earlier trial, as Optuna's best trial does."""
    if not paths.trials.is_dir():
        return []
    kept = []
    for folder in paths.trials.iterdir():
        if folder.name.isdigit() and (stored := _stored(paths, int(folder.name))) is not None:
            kept.append((-float(stored["cv_auc"]), int(folder.name), str(stored.get("family", "-"))))
    removed, total = [], 0.0
    taken: dict[str, int] = {}  # family -> its trials seen so far, best first
    for rank, (_, number, family) in enumerate(sorted(kept)):
        taken[family] = taken.get(family, 0) + 1
        member = taken[family] <= per_family
        total += _size_mb(paths.models(number)) if member else 0.0
        if not member or (rank and total > cap_mb):
            removed.append(number)
            shutil.rmtree(paths.models(number), ignore_errors=True)
    return removed
