"""`python -m bench.simulate`: replay search policies on the learning-curve table, judged on independent patients.

A policy is the search's own machinery, run through Optuna's ask/tell on a simulated clock: the sampler built by
the same code as `stagesearch run` (`make_sampler`), the space's define-by-run function (`Space.space`), Ray's
own `AsyncHyperBandScheduler` class deciding every rung (driven with the results a trial would report; it reads
nothing else of a trial than its id), N parallel workers, and trials still running visible to the sampler as in
a real search. A suggestion maps to the nearest table row of its family (normalised log lr, augmentation, log
weight decay); `--check-mapping` measures what that costs on rows held out of the table. A run's epoch times
come from the table (per family: the median CPU seconds of an epoch, what a one-thread trial takes on an idle
machine whatever else ran while the table was made; wall seconds for rows recorded before the table kept CPU
seconds; `--clock row` takes each row's own wall seconds).

What a policy would register at a budget is its best complete trial by the selection rule; it is scored by its
row's AUC on the table's independent phantom (1,000 patients no trial saw). Seeds fix the sampler, the
scheduler's draws and which training seed of a row a trial gets (the same draw for the same row in every
policy: comparisons are paired). The table has one set of folds (a search's `--seed 0`).

    python -m bench.simulate --seeds 0-199 --budgets 10,20,40,60          # tune
    python -m bench.simulate --seeds 200-399 --policies default,seven,...  # report
    python -m bench.simulate --check-efficiency                           # against the real efficiency runs
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, machine_id, table, write_result
from bench.table import read_runs, table_dir


@dataclass(frozen=True)
class Policy:
    """How a search proposes, stops and chooses: the knobs `stagesearch run` has (and some it may get)."""

    name: str
    sampler: str = "tpe"  # tpe | random
    scheduler: str = "asha"  # asha | fifo
    grace: int = 1
    reduction: float = 3.0
    brackets: int = 1
    study_first: bool = (
        False  # the seven study configurations first, to their last epoch, exempt from stopping
    )
    only_study: bool = False  # the seven study configurations and nothing else
    startup: int = 10  # TPE's random start-up trials (today's default at --budget 200)
    constant_liar: bool = False
    selection: str = "best_cv"  # best_cv | best_fold_mean | lcb


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("default"),
        Policy("random_fifo", sampler="random", scheduler="fifo"),
        Policy("seven", only_study=True, scheduler="fifo"),
        Policy("sf_tpe_asha", study_first=True),
        Policy("sf_grace2", study_first=True, grace=2),
        Policy("sf_grace3", study_first=True, grace=3),
        Policy("sf_rf2", study_first=True, reduction=2.0),
        Policy("sf_rf4", study_first=True, reduction=4.0),
        Policy("sf_brackets2", study_first=True, brackets=2),
        Policy("sf_startup5", study_first=True, startup=5),
        Policy("sf_startup20", study_first=True, startup=20),
        Policy("sf_liar", study_first=True, constant_liar=True),
        Policy("sf_lcb", study_first=True, selection="lcb"),
        Policy("sf_fold_mean", study_first=True, selection="best_fold_mean"),
        Policy("sf_fifo", study_first=True, scheduler="fifo"),
    )
}


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


class _Trial:
    """What Ray's scheduler reads of a trial: its id, and its config (whether it is a comparison trial)."""

    def __init__(self, trial_id: str, comparison: bool) -> None:
        from search.study import COMPARISON_ATTR

        self.trial_id = trial_id
        self.config = {COMPARISON_ATTR: True} if comparison else {}


@dataclass
class Finished:
    """A trial the simulated search finished (complete or stopped) and when."""

    number: int
    row: Row
    epochs: int
    ended_at: float
    complete: bool
    exempt: bool


def _scheduler(policy: Policy, max_epochs: int) -> Any:
    """The scheduler `stagesearch run` builds for these flags (Ray's ASHA with the comparison exempt, or FIFO)."""
    from search.tune.tuning import make_scheduler

    return make_scheduler(policy.scheduler, max_epochs, policy.grace, policy.reduction, policy.brackets)


def _sampler(policy: Policy, seed: int) -> Any:
    """The sampler `stagesearch run` builds for these flags."""
    from search.tune.tuning import make_sampler

    return make_sampler(policy.sampler, seed, startup=policy.startup, constant_liar=policy.constant_liar)


def simulate(
    t: Table,
    policy: Policy,
    seed: int,
    budget_s: float,
    workers: int = 2,
    clock: str = "family",
    overhead_s: float = 1.0,
    max_trials: int | None = None,
) -> list[Finished]:
    """One simulated search of `budget_s` seconds (or `max_trials` trials); every trial it finished, in order."""
    import optuna

    from search.study import COMPARISON_ATTR
    from search.tracking.run_notes import SCHEDULER_METRIC
    from search.tune.driver import comparison_points

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    np.random.seed(seed)  # ASHA draws a bracket per trial from numpy's global generator
    study = optuna.create_study(direction="maximize", sampler=_sampler(policy, seed))
    first = comparison_points(t.space, policy.study_first or policy.only_study, 0)
    for point in first:  # as the search's driver queues them
        study.enqueue_trial(point, user_attrs={COMPARISON_ATTR: True})
    scheduler = _scheduler(policy, t.max_epochs)
    per_epoch = {b: t.family_seconds(b) for b in t.coords}
    events: list[tuple[float, int, int]] = []  # (time, trial number, epoch)
    running: dict[int, tuple[Any, Row, _Trial]] = {}
    finished: list[Finished] = []
    started = 0

    def launch(now: float) -> None:
        nonlocal started
        if now >= budget_s or (max_trials is not None and started >= max_trials):
            return
        if policy.only_study and started >= len(first):
            return
        trial = study.ask()
        params = t.space.space(trial)
        exempt = bool(trial.user_attrs.get(COMPARISON_ATTR))
        config_id = f"{params['backbone']}-study" if exempt else nearest(t, params)
        seeds = t.rows[config_id]
        row = seeds[seed_draw(seed, config_id, list(seeds))]
        started += 1
        running[trial.number] = (trial, row, _Trial(str(trial.number), exempt))
        scheduler.on_trial_add(None, running[trial.number][2])
        at = now + overhead_s + row.setup_seconds
        for epoch in range(1, t.max_epochs + 1):
            at += per_epoch[row.backbone] if clock == "family" else row.seconds[epoch - 1]
            heapq.heappush(events, (at, trial.number, epoch))

    for _ in range(workers):
        launch(0.0)
    stopped: set[int] = set()
    while events:
        now, number, epoch = heapq.heappop(events)
        if number in stopped or now > budget_s:
            continue
        trial, row, tune_trial = running[number]
        value = row.mean_fold_auc[epoch - 1]
        trial.report(value, epoch)  # StageSearch reports the scheduler's metric at step = epoch
        result = {"training_iteration": epoch, SCHEDULER_METRIC: value}
        action = scheduler.on_trial_result(None, tune_trial, result)
        last = epoch == t.max_epochs
        if not last and action != "STOP":
            continue
        scheduler.on_trial_complete(
            None, tune_trial, result
        )  # what Tune tells it of a running trial that ended
        if last:
            study.tell(trial, row.cv_auc[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            stopped.add(number)
        del running[number]
        finished.append(Finished(number, row, epoch, now, last, bool(tune_trial.config)))
        launch(now)
    return finished


def select(finished: Sequence[Finished], rule: str, at: float) -> Finished | None:
    """The trial a search stopped at time `at` would register: its best complete trial by `rule`."""
    complete = [f for f in finished if f.complete and f.ended_at <= at]
    if not complete:
        return None

    def score(f: Finished) -> float:
        if rule == "best_fold_mean":
            return f.row.mean_fold_auc[-1]
        if rule == "lcb":  # a lower bound: the pooled AUC less the folds' standard error
            return f.row.cv_auc[-1] - f.row.fold_sd[-1] / math.sqrt(5)
        return f.row.cv_auc[-1]

    return max(complete, key=score)


def run_policies(
    t: Table,
    policies: Sequence[Policy],
    seeds: Sequence[int],
    budgets_min: Sequence[float],
    workers: int,
    clock: str,
) -> dict[str, Any]:
    """Every policy at every seed, scored at every budget: the independent AUC of what it would register."""
    out: dict[str, Any] = {p.name: {str(b): [] for b in budgets_min} for p in policies}
    spent: dict[str, dict[str, list[float]]] = {p.name: {str(b): [] for b in budgets_min} for p in policies}
    horizon = max(budgets_min) * 60
    for seed in seeds:
        for p in policies:
            finished = simulate(t, p, seed, horizon, workers, clock)
            for b in budgets_min:
                pick = select(finished, p.selection, b * 60)
                out[p.name][str(b)].append(None if pick is None else pick.row.indep_auc.get(t.max_epochs))
                spent[p.name][str(b)].append(sum(f.epochs for f in finished if f.ended_at <= b * 60) * 5)
    return {"independent_auc": out, "fold_epochs": spent}


def summarise(
    t: Table, results: dict[str, Any], seeds: Sequence[int], budgets_min: Sequence[float]
) -> list[dict]:
    """Per policy and budget: median and quartiles of the registered model's independent AUC, its regret to the
    table's best row, P(beats the seven study configurations) on paired seeds, and the fold-epochs spent."""
    best = max(r.indep_auc.get(t.max_epochs, -1) for seeds_ in t.rows.values() for r in seeds_.values())
    rows = []
    auc = results["independent_auc"]
    for name, by_budget in auc.items():
        for b in budgets_min:
            values = np.array([np.nan if v is None else v for v in by_budget[str(b)]], dtype=float)
            seven = np.array(
                [np.nan if v is None else v for v in auc.get("seven", {}).get(str(b), [])], dtype=float
            )
            paired = (
                float(np.mean(values[~np.isnan(seven)] > seven[~np.isnan(seven)]))
                if len(seven) == len(values)
                else None
            )
            rows.append(
                {
                    "policy": name,
                    "budget min": b,
                    "median indep": float(np.nanmedian(values)) if np.isfinite(values).any() else None,
                    "q1": float(np.nanpercentile(values, 25)) if np.isfinite(values).any() else None,
                    "q3": float(np.nanpercentile(values, 75)) if np.isfinite(values).any() else None,
                    "regret": float(best - np.nanmedian(values)) if np.isfinite(values).any() else None,
                    "P(> seven)": paired,
                    "none": int(np.isnan(values).sum()),
                    "fold-epochs": float(np.median(results["fold_epochs"][name][str(b)])),
                }
            )
    return rows


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


def check_efficiency(folder: Path, result_path: Path) -> dict[str, Any]:
    """Replay the real efficiency bench's TPE + ASHA arm (its epochs, trials and seeds) on the table truncated to
    its epochs; compare the share of stopped trials and the epochs a trial, seed by seed."""
    real = json.loads(result_path.read_text())
    epochs, trials = int(real["settings"]["max_epochs"]), int(real["settings"]["tpe_budget"])
    t = load_table(folder, max_epochs=epochs)
    rows = []
    for seed, curve in real["curves"]["tpe_asha"].items():
        spent = [p["fold_epochs"] for p in curve]
        per_trial = np.diff([0, *spent]) / int(real["settings"]["folds"])
        sim = simulate(t, POLICIES["default"], int(seed), 1e9, 2, "family", max_trials=trials)
        sim_epochs = np.array([f.epochs for f in sim])
        rows.append(
            {
                "seed": int(seed),
                "real trials": len(per_trial),
                "real stopped %": 100 * float(np.mean(per_trial < epochs)),
                "real epochs/trial": float(np.mean(per_trial)),
                "sim trials": len(sim_epochs),
                "sim stopped %": 100 * float(np.mean(sim_epochs < epochs)),
                "sim epochs/trial": float(np.mean(sim_epochs)),
            }
        )
    return {"max_epochs": epochs, "trials": trials, "rows": rows}


def parse_seeds(text: str) -> list[int]:
    """`0-199` or `0,1,5`."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    """Flags: the table, the policies, seeds and budgets, and the checks."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--table", default=None, help="table folder (default bench/results/<machine>/table-cpu)")
    ap.add_argument(
        "--policies", default=",".join(POLICIES), help=f"comma-separated, of: {', '.join(POLICIES)}"
    )
    ap.add_argument(
        "--seeds", default="0-199", help="simulation seeds, e.g. 0-199 (tuning) or 200-399 (report)"
    )
    ap.add_argument("--budgets", default="10,20,40,60", help="simulated minutes on the workers")
    ap.add_argument("--workers", type=int, default=2, help="trials at once (a 2-core machine runs 2)")
    ap.add_argument(
        "--clock", choices=("family", "row"), default="family", help="epoch seconds: family median or row's"
    )
    ap.add_argument(
        "--check-mapping", action="store_true", help="leave-one-out check of the nearest-row mapping"
    )
    ap.add_argument(
        "--check-efficiency", default=None, metavar="JSON", help="replay a real efficiency result"
    )
    ap.add_argument("--name", default="simulate", help="result file name (default simulate)")
    ap.add_argument("--out", default=None, help="results folder (default bench/results/<machine>)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the policies (and checks), print the tables, write the JSON."""
    args = build_parser().parse_args(argv)
    folder = Path(args.table) if args.table else table_dir("cpu")
    payload: dict[str, Any] = {
        "table": str(folder.relative_to(RESULTS)) if folder.is_relative_to(RESULTS) else folder.name
    }
    if args.check_efficiency:
        payload["efficiency_check"] = check_efficiency(folder, Path(args.check_efficiency))
        print(table(payload["efficiency_check"]["rows"]))
    t = load_table(folder)
    payload["table_rows"] = sum(len(s) for s in t.rows.values())
    payload["table_fold_epochs"] = payload["table_rows"] * t.max_epochs * 5
    if args.check_mapping:
        payload["mapping_check"] = check_mapping(t)
        print(json.dumps(payload["mapping_check"], indent=1))
        payload["rank_correlations"] = rank_correlations(t)
    policies = [POLICIES[p] for p in args.policies.split(",") if p]
    if "seven" not in {p.name for p in policies}:
        policies.append(POLICIES["seven"])  # the paired reference
    seeds, budgets = parse_seeds(args.seeds), [float(b) for b in args.budgets.split(",")]
    results = run_policies(t, policies, seeds, budgets, args.workers, args.clock)
    rows = summarise(t, results, seeds, budgets)
    print(table(rows))
    payload.update(
        policies=[dataclasses.asdict(p) for p in policies],
        seeds=args.seeds,
        budgets_min=budgets,
        workers=args.workers,
        clock=args.clock,
        rows=rows,
        results=results,
    )
    print(f"wrote {write_result(args.name, payload, args.out or (RESULTS / machine_id()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
