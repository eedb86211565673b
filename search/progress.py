"""What the user sees while a search runs (a live status line) and at its end (the leaderboard)."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import optuna
from ray.tune import Callback

from search.results import TrialEpoch
from search.study import OPTUNA_NUMBER_KEY, best_trial, trial_config


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress(Callback):
    """Counts trials by outcome (failures by reason) and prints one status line per finished trial and every
    `every` seconds."""

    def __init__(self, budget: int, already: dict[str, int], best: tuple[float, dict] | None,
                 every: float = 30.0, out: TextIO | None = None, reasons: dict[str, int] | None = None) -> None:  # fmt: skip
        self.budget = budget
        self.counts = {"complete": already.get("complete", 0), "pruned": already.get("pruned", 0),
                       "failed": already.get("failed", 0)}  # fmt: skip
        self.reasons = dict(reasons or {})  # failed trials by reason
        self.start_finished = sum(self.counts.values())
        self.best = best
        self.every = every
        self.out = out  # None: whatever sys.stdout is when printing (keeps the callback picklable)
        self.started = time.time()
        self.last_print = time.time()
        self.running = 0
        self.epochs: dict[int, tuple[int, float]] = {}  # running trial -> (last epoch, its mean fold AUC)

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def trial_finished(
        self, trial: Any, state: str, final: TrialEpoch | None, error: str = "", reason: str = ""
    ) -> None:
        """Called by the tracking callback when a trial ends (`reason`: why a failed trial failed)."""
        self.running = max(0, self.running - 1)
        self.epochs.pop(int(trial.config.get(OPTUNA_NUMBER_KEY, -1)), None)
        self.counts[state] = self.counts.get(state, 0) + 1
        if state == "complete" and final:
            value = final.cv_auc
            if math.isfinite(value) and (self.best is None or value > self.best[0]):
                params = {k: v for k, v in trial.config.items() if not k.startswith("_")}
                self.best = (value, params)
        if state == "failed":
            reason = reason or "unknown"
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            first = error.strip().splitlines()[-1] if error.strip() else "see the Ray trial log"
            print(
                f"trial {trial.config.get(OPTUNA_NUMBER_KEY)} failed ({reason}): {first}",
                file=self.out or sys.stdout,
                flush=True,
            )
        self.print_line()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running += 1

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune restarts a failed trial (e.g. its node died): say so and why (it counts once, when it ends)."""
        from search.tuning import trial_error

        self.running = max(0, self.running - 1)
        number = int(trial.config.get(OPTUNA_NUMBER_KEY, -1))
        self.epochs.pop(number, None)
        where = (trial.last_result or {}).get("node", "?")
        error = trial_error(trial).strip()
        reason = error.splitlines()[-1] if error else "see the Ray trial log"
        print(f"trial {number} failed on node {where}: {reason}; restarting it from scratch (retry "
              f"{trial.num_failures} of {trial.max_failures})", file=self.out or sys.stdout, flush=True)  # fmt: skip

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.epochs[int(trial.config.get(OPTUNA_NUMBER_KEY, -1))] = (
            result.get("epoch", 0),
            result["mean_fold_auc"],
        )

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.time() - self.last_print >= self.every:
            self.print_line()

    def print_line(self) -> None:
        """`[ 12/200] complete 9 pruned 3 failed 0 running 2 | best cv_auc 0.812 (...) | 4m10s, ~1h05m left`."""
        self.last_print = time.time()
        elapsed = time.time() - self.started
        done_now = self.finished - self.start_finished
        left = self.budget - self.finished
        eta = f"~{_fmt_duration(elapsed / done_now * left)} left" if done_now and left > 0 else ""
        best = "best cv_auc -"
        if self.best is not None:
            b = self.best[1]
            best = (f"best cv_auc {self.best[0]:.3f} ({b.get('backbone')}, {b.get('resolution')} px, "
                    f"lr {b.get('lr', 0):.1e}, aug {b.get('aug_strength', 0):.2f})")  # fmt: skip
        c = self.counts
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        failed = f"failed {c['failed']}" + (f" ({why})" if why else "")
        now = "".join(
            f" | trial {n}: epoch {e}, mean fold AUC {a:.3f}" for n, (e, a) in sorted(self.epochs.items())
        )
        print(
            f"[{self.finished:>4}/{self.budget}] complete {c['complete']} pruned {c['pruned']} "
            f"{failed} running {self.running} | {best} | {_fmt_duration(elapsed)} {eta}".rstrip()
            + now,
            file=self.out or sys.stdout,
            flush=True,
        )


def best_complete(study: optuna.Study) -> tuple[float, dict] | None:
    """Best finished-to-the-end trial so far as (cv_auc, params)."""
    best = best_trial(study)
    return (best.value, trial_config(best)) if best is not None else None
