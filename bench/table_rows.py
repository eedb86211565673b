"""The learning-curve table as the simulator reads it (`bench.simulate`): rows by configuration and training
seed, where a suggestion falls among them (`nearest`, checked on rows held out: `check_mapping`), and how early a
rung tells good from bad (`rank_correlations`). The table itself is made by `bench.table`."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.table import read_runs


@dataclass
class Row:
    """One table run: a configuration at a training seed, epoch by epoch."""

    config_id: str
    seed: int
    backbone: str
    params: dict[str, float]
    mean_fold_auc: list[float]
    cv_auc: list[float]
    fold_sd: list[float]
    seconds: list[float]
    setup_seconds: float
    #: CPU seconds of each epoch (None: a row recorded before the table kept them)
    cpu_seconds: list[float] | None
    indep_auc: dict[int, float]  # epoch -> AUC on the independent phantom
    #: the last epoch's out-of-fold P(T2), in the header's `oof_patients` order (what the ensemble is built on)
    oof: np.ndarray | None = None
    #: the last epoch's P(T2) on the independent phantom (fold models' mean), in `indep_labels` order
    indep_probs: np.ndarray | None = None

    @property
    def epochs(self) -> int:
        """Epochs the row was trained for."""
        return len(self.cv_auc)


@dataclass
class Table:
    """The learning-curve table: rows by configuration and seed, the families' coordinates for the mapping."""

    header: dict[str, Any]
    rows: dict[str, dict[int, Row]]  # config_id -> seed -> row
    space: Any
    max_epochs: int
    coords: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)  # backbone -> (ids, points)

    def family_seconds(self, backbone: str) -> float:
        """Median seconds of one epoch of this family's rows: their CPU seconds where rows have them (what a
        one-thread epoch takes on an idle machine, whatever else ran meanwhile), else their wall seconds."""
        rows = [r for seeds in self.rows.values() for r in seeds.values() if r.backbone == backbone]
        cpu = [s for r in rows if r.cpu_seconds for s in r.cpu_seconds]
        return float(np.median(cpu or [s for r in rows for s in r.seconds]))

    def study_ids(self) -> list[str]:
        """The study points' configuration ids, in the space's order."""
        return [f"{b}-study" for b in self.space.backbones if f"{b}-study" in self.rows]


def unit(space: Any, params: dict[str, Any]) -> np.ndarray:
    """A configuration's (lr, augmentation, weight decay) in the unit cube of the space's (log) ranges."""
    wd = space.weight_decay if not isinstance(space.weight_decay, float) else (space.weight_decay,) * 2
    out = [
        (math.log10(params["lr"]) - math.log10(space.lr[0]))
        / (math.log10(space.lr[1]) - math.log10(space.lr[0])),
        (params["aug_strength"] - space.aug_strength[0])
        / max(space.aug_strength[1] - space.aug_strength[0], 1e-12),
        0.0
        if wd[0] == wd[1]
        else (math.log10(params.get("weight_decay", wd[0])) - math.log10(wd[0]))
        / (math.log10(wd[1]) - math.log10(wd[0])),
    ]
    return np.asarray(out)


def load_table(folder: Path, max_epochs: int | None = None) -> Table:
    """Read a table folder (`bench.table`); `max_epochs` truncates every row (a shorter search's view)."""
    from spaces import get_space

    header = json.loads((folder / "table.json").read_text())
    space = get_space(header["space"])
    epochs = max_epochs or int(header["max_epochs"])
    rows: dict[str, dict[int, Row]] = {}
    for r in read_runs(folder):
        e = r["epochs"][:epochs]
        if len(e) < epochs:
            continue
        rows.setdefault(r["config_id"], {})[int(r["seed"])] = Row(
            config_id=r["config_id"],
            seed=int(r["seed"]),
            backbone=r["params"]["backbone"],
            params=r["params"],
            mean_fold_auc=[x["mean_fold_auc"] for x in e],
            cv_auc=[x["cv_auc"] for x in e],
            fold_sd=[float(np.nanstd([a for a in x["fold_auc"] if a is not None])) for x in e],
            seconds=[x["seconds"] for x in e],
            setup_seconds=float(r.get("setup_seconds", 0.0)),
            cpu_seconds=[x["cpu_seconds"] for x in e] if all("cpu_seconds" in x for x in e) else None,
            indep_auc={int(x["epoch"]): x["indep_auc"] for x in e if "indep_auc" in x},
            oof=np.asarray(e[-1]["oof"], dtype=float) if "oof" in e[-1] else None,
            indep_probs=(
                np.asarray(r["indep_probs"], dtype=float)
                if r.get("indep_probs") is not None and epochs == int(header["max_epochs"])
                else None
            ),
        )
    t = Table(header, rows, space, epochs)
    for backbone in space.backbones:
        ids = sorted(cid for cid, seeds in rows.items() if 0 in seeds and seeds[0].backbone == backbone)
        if ids:
            t.coords[backbone] = (ids, np.stack([unit(space, rows[c][0].params) for c in ids]))
    return t


def nearest(t: Table, params: dict[str, Any], exclude: str | None = None) -> str:
    """The configuration id of the table row nearest to `params` within its family."""
    ids, points = t.coords[params["backbone"]]
    d = np.linalg.norm(points - unit(t.space, params), axis=1)
    if exclude is not None and exclude in ids:
        d[ids.index(exclude)] = np.inf
    return ids[int(np.argmin(d))]


def seed_draw(seed: int, config_id: str, seeds: Sequence[int]) -> int:
    """Which training seed of a row a trial gets: fixed by (simulation seed, configuration), so paired."""
    digest = hashlib.sha256(f"{seed}:{config_id}".encode()).digest()
    return sorted(seeds)[digest[0] % len(seeds)]


def check_mapping(t: Table) -> dict[str, Any]:
    """Leave-one-out: each seed-0 row's last-epoch cv_auc and independent AUC predicted by its nearest other row
    of the family, against predicting the family's mean. Mean absolute errors."""
    nn_cv, nn_ind, mean_cv, mean_ind = [], [], [], []
    for ids, _ in t.coords.values():
        if len(ids) < 3:
            continue
        fam = [t.rows[c][0] for c in ids]
        for r in fam:
            other = t.rows[nearest(t, r.params, exclude=r.config_id)][0]
            rest = [f for f in fam if f.config_id != r.config_id]
            nn_cv.append(abs(other.cv_auc[-1] - r.cv_auc[-1]))
            nn_ind.append(abs(other.indep_auc[t.max_epochs] - r.indep_auc[t.max_epochs]))
            mean_cv.append(abs(np.mean([f.cv_auc[-1] for f in rest]) - r.cv_auc[-1]))
            mean_ind.append(
                abs(np.mean([f.indep_auc[t.max_epochs] for f in rest]) - r.indep_auc[t.max_epochs])
            )
    return {
        "rows": len(nn_cv),
        "nearest_mae_cv_auc": float(np.mean(nn_cv)) if nn_cv else None,
        "family_mean_mae_cv_auc": float(np.mean(mean_cv)) if mean_cv else None,
        "nearest_mae_indep_auc": float(np.mean(nn_ind)) if nn_ind else None,
        "family_mean_mae_indep_auc": float(np.mean(mean_ind)) if mean_ind else None,
    }


def rank_correlations(t: Table) -> dict[str, list[float | None]]:
    """Per family, Spearman's correlation of epoch-k mean fold AUC (what ASHA compares) with the last epoch's
    independent AUC, over the family's seed-0 rows: how early a rung can tell good from bad."""
    from scipy.stats import spearmanr

    out = {}
    for backbone, (ids, _) in t.coords.items():
        fam = [t.rows[c][0] for c in ids]
        final = [r.indep_auc[t.max_epochs] for r in fam]
        out[backbone] = [
            None if len(fam) < 4 else float(spearmanr([r.mean_fold_auc[k] for r in fam], final).statistic)
            for k in range(t.max_epochs)
        ]
    return out
