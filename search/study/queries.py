"""Queries over a study's Optuna trials: counts, the best trial, closing stale trials, the leaderboard."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.guard.kill_points import kill_point
from search.study.folder import (
    BATCH_SIZE_ATTR,
    CONFIG_ATTR,
    FAIL_REASON_ATTR,
    FAMILY_ATTR,
    INTERRUPTED_ATTR,
    LEADERBOARD_SCHEMA,
    StudyFormatError,
    StudyPaths,
    read_json,
    write_json,
)


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state; `finished` counts what spends the budget (complete, pruned, failed by error)."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["interrupted" if t.user_attrs.get(INTERRUPTED_ATTR) else "failed"] += 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            counts["running"] += 1
    counts["finished"] = counts["complete"] + counts["pruned"] + counts["failed"]
    return counts


def failure_counts(study: optuna.Study) -> dict[str, int]:
    """Failed trials (not interrupted ones) by the reason the search recorded, most frequent first."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if not t.user_attrs.get(INTERRUPTED_ATTR):
            reason = str(t.user_attrs.get(FAIL_REASON_ATTR) or "unknown")
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def format_failures(counts: dict[str, int]) -> str:
    """`nan_loss 2, out_of_memory 1` ("" when nothing failed)."""
    return ", ".join(f"{reason} {n}" for reason, n in counts.items() if n)


def session_outcomes(study: optuna.Study, first_number: int) -> list[str | None]:
    """Trials numbered from `first_number` (one session's) in the order they finished: the failure reason of a
    failed trial, None for a complete or pruned one (interrupted and unfinished trials are left out)."""
    done = []
    for t in study.get_trials(deepcopy=False):
        if t.number < first_number or t.datetime_complete is None or t.user_attrs.get(INTERRUPTED_ATTR):
            continue
        if t.state == TrialState.FAIL:
            done.append((t.datetime_complete, t.number, str(t.user_attrs.get(FAIL_REASON_ATTR) or "unknown")))
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done.append((t.datetime_complete, t.number, None))
    return [reason for _, _, reason in sorted(done)]


def close_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark trials left RUNNING by an interrupted or killed search as failed-interrupted; return their numbers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    closed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, time.strftime("%Y-%m-%dT%H:%M:%S"))
        study.tell(t.number, state=TrialState.FAIL)
        closed.append(t.number)
    return closed


def numeric_attrs(trial: FrozenTrial) -> dict[str, float]:
    """A trial's numeric user attributes (the final metrics the search stored), plus cv_auc when it is complete (a
    pruned trial's value is its last intermediate value, a mean_fold_auc: `search.tune.tuning`)."""
    out = {
        k: float(v)
        for k, v in trial.user_attrs.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if trial.value is not None and trial.state == TrialState.COMPLETE:
        out["cv_auc"] = trial.value
    return out


def finished_trials(study: optuna.Study) -> dict[int, tuple[str, dict[str, float]]]:
    """Complete and pruned trials as number -> (state, final metrics), for closing their tracking runs."""
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return {
        t.number: ("complete" if t.state == TrialState.COMPLETE else "pruned", numeric_attrs(t))
        for t in study.get_trials(deepcopy=False, states=states)
    }


def best_trial(study: optuna.Study, number: int | None = None) -> FrozenTrial | None:
    """Trial `number` if it is complete, else (number None) the complete trial with the highest cv_auc; or None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if number is not None:
        return next((t for t in complete if t.number == number), None)
    return max(complete, key=lambda t: t.value, default=None)


def trial_config(trial: FrozenTrial) -> dict[str, Any]:
    """What a trial trained with: its configuration as the space returned it (format-1 trials: their sampled
    params only), with the batch size it actually used (half the sampled one after running out of memory), so
    a refit trains what the trial trained."""
    config = dict(trial.user_attrs.get(CONFIG_ATTR) or trial.params)
    if trial.user_attrs.get(BATCH_SIZE_ATTR):
        config["batch_size"] = int(trial.user_attrs[BATCH_SIZE_ATTR])
    return config


def backbone_of(trial: FrozenTrial) -> str:
    """The backbone a trial trained ("?" when unknown)."""
    return str(trial_config(trial).get("backbone", "?"))


def family_attr(trial: FrozenTrial) -> str:
    """A trial's backbone family as the search recorded it ("-" for trials of format-1 folders)."""
    return str(trial.user_attrs.get(FAMILY_ATTR) or "-")


ROW_METRICS = ("accuracy", "precision", "recall", "f1", "fold_auc_mean", "fold_auc_sd")


@dataclass(frozen=True)
class LeaderboardRow:
    """The best complete trial of one backbone family."""

    family: str
    backbone: str
    trial: int
    cv_auc: float
    params: dict[str, Any]
    metrics: dict[str, float]
    pretrained: bool | None
    oof: str | None  # the trial's out-of-fold table, relative to the study folder (None when there is none)


#: Optional estimates `leaderboard.json` holds beside its rows (see `Leaderboard`).
ESTIMATE_KEYS = (
    "corrected_auc",
    "corrected_auc_ci",
    "corrected",
    "per_site",
    "baseline",
    "site_shortcut",
    "candidates",  # every kind's candidate and the nested selection (`search.stats.study_candidates`)
    "missing",  # not an estimate: the space's families without a complete trial, and why (`missing_families`)
)


@dataclass(frozen=True)
class Leaderboard:
    """Trial counts and the best complete trial per family, best first: `leaderboard.json`."""

    study: str
    counts: dict[str, int]
    rows: list[LeaderboardRow]
    failures: dict[str, int] = field(default_factory=dict)  # failed trials by reason
    #: The estimates beside the rows (each None until computed; JSON-ready values):
    corrected_auc: float | None = None  # the winner's selection-bias-corrected AUC (BBC-CV mean)
    corrected_auc_ci: list[float] | None = None  # its 95% interval [low, high]
    corrected: dict[str, Any] | None = (
        None  # how it was computed: resamples, configurations used, excluded trials
    )
    per_site: dict[str, Any] | None = None  # the winner's AUC, n and prevalence per site (OOF, and hold-out)
    baseline: dict[str, Any] | None = None  # the non-deep baseline scored on the study's folds
    site_shortcut: dict[str, Any] | None = None  # how well the site alone predicts the label
    missing: list[dict[str, Any]] | None = None  # families of the space with no complete trial: {family, why}
    candidates: dict[str, Any] | None = None  # kinds of candidate, the ensemble, the registered kind

    @property
    def whole_selection(self) -> dict[str, Any] | None:
        """The candidates' whole selection ({corrected_auc, corrected_auc_ci}: the estimate of what is registered,
        whichever kind) when the study compared kinds, else None: the estimate to quote when there is one."""
        whole = (self.candidates or {}).get("selection")
        return whole if whole and whole.get("corrected_auc_ci") else None

    def to_json(self) -> dict[str, Any]:
        """Schema 1: {schema, study, written, counts: {state: n}, failures: {reason: n}, rows: [{family, backbone,
        trial, cv_auc, params: {name: value}, metrics: {name: value}, pretrained, oof}], corrected_auc,
        corrected_auc_ci: [low, high], corrected, per_site, baseline, site_shortcut}; NaN metrics are left out.
        Everything after `rows` was added later: readers treat those keys as optional (null when not computed)."""
        rows = [
            {**r.__dict__, "metrics": {k: v for k, v in r.metrics.items() if math.isfinite(v)}}
            for r in self.rows
        ]
        return {
            "schema": LEADERBOARD_SCHEMA,
            "study": self.study,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "counts": self.counts,
            "failures": self.failures,
            "rows": rows,
            **{key: getattr(self, key) for key in ESTIMATE_KEYS},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Leaderboard:
        """Read a `to_json` document; StudyFormatError for another schema."""
        if data.get("schema") != LEADERBOARD_SCHEMA:
            raise StudyFormatError(
                f"{where} has leaderboard schema {data.get('schema', 'none')}, this version reads "
                f"{LEADERBOARD_SCHEMA}: run `stagesearch run --study {data.get('study', '<name>')} --resume` "
                "to rewrite it"
            )
        rows = [LeaderboardRow(**r) for r in data["rows"]]
        estimates = {key: data.get(key) for key in ESTIMATE_KEYS}
        return cls(data["study"], data["counts"], rows, dict(data.get("failures") or {}), **estimates)


def leaderboard(
    study: optuna.Study, paths: StudyPaths, family: Callable[[FrozenTrial], str] = family_attr
) -> Leaderboard:
    """The study's leaderboard now (`family` names a trial's family; default: what the search recorded)."""
    best: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        fam = family(t)
        if fam not in best or t.value > best[fam].value:
            best[fam] = t
    rows = []
    for fam, t in sorted(best.items(), key=lambda kv: -kv[1].value):
        oof = paths.oof(t.number)
        attrs = numeric_attrs(t)
        rows.append(
            LeaderboardRow(
                family=fam,
                backbone=backbone_of(t),
                trial=t.number,
                cv_auc=float(t.value),
                params=trial_config(t),
                metrics={k: attrs[k] for k in ROW_METRICS if k in attrs},
                pretrained=t.user_attrs.get("pretrained"),
                oof=str(oof.relative_to(paths.root)) if oof.exists() else None,
            )
        )
    return Leaderboard(study.study_name, count_trials(study), rows, failure_counts(study))


def missing_families(study: optuna.Study, families: dict[str, str]) -> list[dict[str, Any]]:
    """Every family of the space (`families`: backbone -> family) without a complete trial, with why: how its
    trials ended ("not tried" when it had none), so a leaderboard always accounts for every family."""
    out = []
    trials = study.get_trials(deepcopy=False)
    for fam in dict.fromkeys(families.values()):
        mine = [t for t in trials if families.get(backbone_of(t)) == fam]
        if any(t.state == TrialState.COMPLETE for t in mine):
            continue
        ended = Counter(t.state for t in mine)
        reasons = Counter(
            str(t.user_attrs.get(FAIL_REASON_ATTR, "error")) for t in mine if t.state == TrialState.FAIL
        )
        parts = [f"{ended[TrialState.PRUNED]} stopped early"] if ended[TrialState.PRUNED] else []
        if ended[TrialState.FAIL]:
            parts.append(f"{ended[TrialState.FAIL]} failed ({format_failures(dict(reasons))})")
        if ended[TrialState.RUNNING] + ended[TrialState.WAITING]:
            parts.append(f"{ended[TrialState.RUNNING] + ended[TrialState.WAITING]} unfinished")
        why = f"{len(mine)} trial(s): " + ", ".join(parts) if mine else "not tried"
        out.append(
            {"family": fam, "backbones": sorted(b for b, f in families.items() if f == fam), "why": why}
        )
    return out


def format_missing(missing: list[dict[str, Any]] | None) -> str:
    """One line per family without a complete trial ("" when every family has one)."""
    return "".join(f"\n{m['family']:<11} no complete trial: {m['why']}" for m in missing or [])


def write_leaderboard(paths: StudyPaths, board: Leaderboard) -> None:
    """`leaderboard.json` in the study folder."""
    write_json(paths.leaderboard, board.to_json(), before_replace=lambda: kill_point("writing_leaderboard"))


def read_leaderboard(paths: StudyPaths) -> Leaderboard | None:
    """The study's `leaderboard.json` (None before a search session has ended)."""
    data = read_json(paths.leaderboard)
    return Leaderboard.from_json(data, paths.leaderboard) if data else None


def format_leaderboard(rows: list[LeaderboardRow]) -> str:
    """Plain-text table of leaderboard rows."""

    def f(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "-"

    head = f"{'family':<11} {'backbone':<22} {'trial':>5} {'cv_auc':>6} {'acc':>6} {'prec':>6} {'recall':>6} {'F1':>6}  config"
    lines = [head, "-" * len(head)]
    for r in rows:
        m, p = r.metrics, r.params
        lines.append(
            f"{r.family:<11} {r.backbone:<22} {r.trial:>5} {f(r.cv_auc):>6} {f(m.get('accuracy')):>6} "
            f"{f(m.get('precision')):>6} {f(m.get('recall')):>6} {f(m.get('f1')):>6}  {p.get('resolution')} px, "
            f"lr {p.get('lr', 0):.1e}, aug {p.get('aug_strength', 0):.2f}{'' if r.pretrained else ', random init'}"
        )
    return "\n".join(lines)
