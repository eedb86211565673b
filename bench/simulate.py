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

Budgets are compute: by default the fold-epochs a search's trials train (a stopped trial counts the epochs it
trained), the largest a third of the full table's, so that no policy can try every row to the end; `--unit
minutes` takes minutes of the simulated clock instead. Per budget the result also says the simulated minutes.

    python -m bench.simulate --seeds 0-199                                 # tune
    python -m bench.simulate --seeds 200-399 --policies default,seven,...  # report
    python -m bench.simulate --check-efficiency                           # against the real efficiency runs
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, machine_id, table, write_result
from bench.policies import FOLDS, POLICIES, Policy
from bench.simulate_pick import Finished, pick_auc
from bench.simulate_summary import plot, summarise
from bench.table import table_dir
from bench.table_rows import Row, Table, check_mapping, load_table, nearest, rank_correlations, seed_draw


class _Trial:
    """What Ray's scheduler reads of a trial: its id, and its config (whether it is a comparison trial)."""

    def __init__(self, trial_id: str, comparison: bool) -> None:
        from search.study import COMPARISON_ATTR

        self.trial_id = trial_id
        self.config = {COMPARISON_ATTR: True} if comparison else {}


def _scheduler(policy: Policy, max_epochs: int) -> Any:
    """The scheduler `stagesearch run` builds for these flags (Ray's ASHA with the comparison exempt, or FIFO)."""
    from search.tune.tuning import make_scheduler

    return make_scheduler(policy.scheduler, max_epochs, policy.grace, policy.reduction, policy.brackets)


def _sampler(policy: Policy, seed: int) -> Any:
    """The sampler `stagesearch run` builds for these flags."""
    from search.tune.tuning import make_sampler

    return make_sampler(policy.sampler, seed, startup=policy.startup, constant_liar=policy.constant_liar)


class _Search:
    """One simulated search: Optuna's study through ask/tell, Ray's ASHA deciding every rung, a clock of events."""

    def __init__(
        self,
        t: Table,
        policy: Policy,
        seed: int,
        budget_s: float,
        clock: str,
        overhead_s: float,
        budget_fe: float = math.inf,
    ) -> None:
        import optuna

        from search.study import COMPARISON_ATTR
        from search.tune.driver import comparison_points

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`
        np.random.seed(seed)  # ASHA draws a bracket per trial from numpy's global generator
        self.t, self.policy, self.seed, self.budget_s = t, policy, seed, budget_s
        self.budget_fe = budget_fe  # fold-epochs: the search stops when its trials have trained this many
        self.epoch_ends: list[float] = []  # when each epoch any trial trained ended, in time order
        self.clock, self.overhead_s = clock, overhead_s
        self.study = optuna.create_study(direction="maximize", sampler=_sampler(policy, seed))
        self.first = comparison_points(t.space, policy.study_first or policy.only_study, 0)
        for point in self.first:  # as the search's driver queues them
            self.study.enqueue_trial(point, user_attrs={COMPARISON_ATTR: True})
        self.scheduler = _scheduler(policy, t.max_epochs)
        self.per_epoch = {b: t.family_seconds(b) for b in t.coords}
        self.events: list[tuple[float, int, int]] = []  # (time, trial number, epoch)
        self.running: dict[int, tuple[Any, Row, _Trial]] = {}
        self.finished: list[Finished] = []
        self.started = 0

    def launch(self, now: float, max_trials: int | None) -> None:
        """Start the next trial at `now` (unless the budget is spent): its epochs' ends become events."""
        from search.study import COMPARISON_ATTR

        spent = len(self.epoch_ends) * FOLDS >= self.budget_fe
        if now >= self.budget_s or spent or (max_trials is not None and self.started >= max_trials):
            return
        if self.policy.only_study and self.started >= len(self.first):
            return
        t = self.t
        trial = self.study.ask()
        params = t.space.space(trial)
        exempt = bool(trial.user_attrs.get(COMPARISON_ATTR))
        config_id = f"{params['backbone']}-study" if exempt else nearest(t, params)
        seeds = t.rows[config_id]
        row = seeds[seed_draw(self.seed, config_id, list(seeds))]
        self.started += 1
        self.running[trial.number] = (trial, row, _Trial(str(trial.number), exempt))
        self.scheduler.on_trial_add(None, self.running[trial.number][2])
        at = now + self.overhead_s + row.setup_seconds
        for epoch in range(1, t.max_epochs + 1):
            at += self.per_epoch[row.backbone] if self.clock == "family" else row.seconds[epoch - 1]
            heapq.heappush(self.events, (at, trial.number, epoch))

    def run(self, workers: int, max_trials: int | None) -> list[Finished]:
        """Play the events in time order until none is left; every trial finished, in order."""
        import optuna

        from search.tracking.run_notes import SCHEDULER_METRIC

        for _ in range(workers):
            self.launch(0.0, max_trials)
        stopped: set[int] = set()
        while self.events:
            now, number, epoch = heapq.heappop(self.events)
            if number in stopped or now > self.budget_s or len(self.epoch_ends) * FOLDS >= self.budget_fe:
                continue
            self.epoch_ends.append(now)
            trial, row, tune_trial = self.running[number]
            value = row.mean_fold_auc[epoch - 1]
            trial.report(value, epoch)  # StageSearch reports the scheduler's metric at step = epoch
            result = {"training_iteration": epoch, SCHEDULER_METRIC: value}
            action = self.scheduler.on_trial_result(None, tune_trial, result)
            last = epoch == self.t.max_epochs
            if not last and action != "STOP":
                continue
            self.scheduler.on_trial_complete(
                None, tune_trial, result
            )  # what Tune tells it of a trial that ended
            if last:
                self.study.tell(trial, row.cv_auc[-1])
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                stopped.add(number)
            del self.running[number]
            self.finished.append(Finished(number, row, epoch, now, last, bool(tune_trial.config)))
            self.launch(now, max_trials)
        return self.finished


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
    return _Search(t, policy, seed, budget_s, clock, overhead_s).run(workers, max_trials)


def budget_end(search: _Search, budget: float, unit: str) -> float:
    """When a search of `budget` (minutes, or fold-epochs its trials trained) ends on the simulated clock."""
    if unit == "minutes":
        return budget * 60
    needed = math.ceil(budget / FOLDS)
    return search.epoch_ends[needed - 1] if needed <= len(search.epoch_ends) else math.inf


def run_policies(
    t: Table,
    policies: Sequence[Policy],
    seeds: Sequence[int],
    budgets: Sequence[float],
    workers: int,
    clock: str,
    unit: str = "minutes",
) -> dict[str, Any]:
    """Every policy at every seed, scored at every budget (simulated minutes, or fold-epochs): the independent
    AUC of what it would register, the fold-epochs spent and the simulated minutes taken."""
    keys = [str(b) for b in budgets]
    out: dict[str, Any] = {p.name: {k: [] for k in keys} for p in policies}
    spent: dict[str, dict[str, list[float]]] = {p.name: {k: [] for k in keys} for p in policies}
    minutes: dict[str, dict[str, list[float]]] = {p.name: {k: [] for k in keys} for p in policies}
    horizon_s, horizon_fe = (max(budgets) * 60, math.inf) if unit == "minutes" else (math.inf, max(budgets))
    started = time.monotonic()
    for done, seed in enumerate(seeds, 1):
        searches: dict[
            Policy, tuple[_Search, list[Finished]]
        ] = {}  # the selection rule does not steer a search
        for p in policies:
            how = dataclasses.replace(p, name="", selection="")
            if how not in searches:
                searches[how] = (
                    search := _Search(t, p, seed, horizon_s, clock, 1.0, horizon_fe),
                    search.run(workers, None),
                )
            search, finished = searches[how]
            for b, k in zip(budgets, keys, strict=True):
                at = budget_end(search, b, unit)
                out[p.name][k].append(pick_auc(t, finished, p.selection, at, seed))
                spent[p.name][k].append(FOLDS * sum(1 for e in search.epoch_ends if e <= at))
                minutes[p.name][k].append(min(at, search.epoch_ends[-1] if search.epoch_ends else 0.0) / 60)
        if done % 10 == 0 or done == len(seeds):
            took = time.monotonic() - started
            print(f"seed {done}/{len(seeds)}, {took / 60:.1f} min", file=sys.stderr, flush=True)
    return {"independent_auc": out, "fold_epochs": spent, "minutes": minutes}


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
        sim = simulate(t, POLICIES["no_study_first"], int(seed), 1e9, 2, "family", max_trials=trials)
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
    ap.add_argument(
        "--budgets",
        default="400,800,1600,2400",
        help="compute budgets, in --unit (default 400,800,1600,2400 fold-epochs: the largest a third of the "
        "full table's 7,280)",
    )
    ap.add_argument(
        "--unit",
        choices=("fold-epochs", "minutes"),
        default="fold-epochs",
        help="fold-epochs the trials train (default), or minutes on the simulated clock",
    )
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
    payload["table_fold_epochs"] = payload["table_rows"] * t.max_epochs * FOLDS
    if args.check_mapping:
        payload["mapping_check"] = check_mapping(t)
        print(json.dumps(payload["mapping_check"], indent=1))
    payload["rank_correlations"] = rank_correlations(t)
    policies = [POLICIES[p] for p in args.policies.split(",") if p]
    if "seven" not in {p.name for p in policies}:
        policies.append(POLICIES["seven"])  # the paired reference
    seeds, budgets = parse_seeds(args.seeds), [float(b) for b in args.budgets.split(",")]
    if args.unit == "fold-epochs" and max(budgets) > payload["table_fold_epochs"] / 3:
        print(
            f"note: the largest budget ({max(budgets):g} fold-epochs) is over a third of the table's "
            f"{payload['table_fold_epochs']}: a policy could try most rows to the end"
        )
    results = run_policies(t, policies, seeds, budgets, args.workers, args.clock, args.unit)
    rows = summarise(t, results, seeds, budgets)
    print(f"budgets in {args.unit}; independent AUC of the pick on the table's independent phantom")
    print(table(rows))
    payload.update(
        policies=[dataclasses.asdict(p) for p in policies],
        seeds=args.seeds,
        budgets=budgets,
        unit=args.unit,
        workers=args.workers,
        clock=args.clock,
        rows=rows,
        results=results,
    )
    out_dir = Path(args.out) if args.out else RESULTS / machine_id()
    written = write_result(args.name, payload, out_dir)
    plot(rows, args.unit, payload.get("rank_correlations"), written.with_suffix(".png"))
    print(f"wrote {written} and {written.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
