"""What the user sees while a search runs: a line per finished trial, and the running trials either as a live
table (on a terminal) or in a status line (plain lines for CI and pipes, every `every` seconds).

Two metrics, named the same everywhere: `mean_fold_auc` is what a running trial reports after each epoch (the mean
of its k fold AUCs: what ASHA compares to stop weak trials early); `cv_auc` is a finished trial's pooled
out-of-fold patient-level AUC (what the search maximises). `LEGEND` says so once at the start of a run.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
from ray.tune import Callback
from ray.tune.progress_reporter import TrialProgressCallback

from search.study import OPTUNA_NUMBER_KEY, best_trial, trial_config
from search.study.results import TrialEpoch

LEGEND = (
    "metrics: mean_fold_auc = mean of the fold AUCs after each epoch of a running trial (what ASHA compares "
    "to stop weak trials early); cv_auc = pooled out-of-fold patient-level AUC of a finished trial (what the "
    "search maximises)"
)
TABLE, LINES = "table", "lines"
COLUMNS = ["trial", "backbone", "px", "lr", "aug", "epoch", "mean_fold_auc", "running for"]


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def estimate_left(finish_times: list[float], elapsed: float, left: int) -> float | None:
    """Seconds the `left` trials will take, at the rate of the later half of the trials finished so far.

    ASHA stops more and more trials at its first rung as the rungs fill, so trials finish faster as a search
    goes on and the rate since the start overestimates what remains (by +31 % at a quarter of a 200-trial
    search on 2 cores, against +20 % for the later half's rate; docs/PERFORMANCE.md). Below 10 finished trials
    the rate since the start (less noisy). None when nothing finished yet or nothing is left."""
    done = len(finish_times)
    if not done or left <= 0:
        return None
    if done < 10:
        return elapsed / done * left
    half = done // 2
    since = finish_times[half - 1]  # when the first half had finished
    return (elapsed - since) / (done - half) * left


def describe(params: dict) -> str:
    """`resnet50, 64 px, lr 1.0e-03, aug 0.50`: what a trial tried."""
    return (
        f"{params.get('backbone')}, {params.get('resolution')} px, lr {params.get('lr', 0):.1e}, "
        f"aug {params.get('aug_strength', 0):.2f}"
    )


@dataclass
class Running:
    """A trial that has started and not finished: its parameters and its last epoch."""

    params: dict
    started: float = field(default_factory=time.time)
    epoch: int = 0
    mean_fold_auc: float | None = None


def _number(trial: Any) -> int:
    return int(trial.config.get(OPTUNA_NUMBER_KEY, -1))


class Progress(Callback):
    """Counts trials by outcome (failures by reason); prints a line per finished trial and shows the running ones.

    `view`: "table" (a live rich table, for a terminal) or "lines" (the status line after every finished trial
    and every `every` seconds). `--quiet` is the console's (search.console.routing): it still gets every line, for
    the log file. Tune pickles its callbacks: the live table is made in the driver when the search starts, never pickled."""

    def __init__(
        self,
        budget: int,
        already: dict[str, int],
        best: tuple[float, dict] | None,
        every: float = 30.0,
        out: TextIO | None = None,
        reasons: dict[str, int] | None = None,
        max_epochs: int = 0,
        view: str = LINES,
        console: Any = None,
    ) -> None:
        self.budget = budget
        self.counts = {
            "complete": already.get("complete", 0),
            "pruned": already.get("pruned", 0),
            "failed": already.get("failed", 0),
        }
        self.reasons = dict(reasons or {})  # failed trials by reason
        self.start_finished = sum(self.counts.values())
        self.best = best
        self.every = every
        self.out = out  # None: whatever sys.stdout is when printing (keeps the callback picklable)
        self.max_epochs = max_epochs
        self.view = view
        self.started = time.time()
        self.last_print = time.time()
        self.finish_times: list[float] = []  # when each trial of this session ended (seconds since `started`)
        self.trials: dict[int, Running] = {}  # the running trials by Optuna number
        self._console = console  # a rich Console for the table (default: the terminal)
        self._live: Any = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_live": None, "_console": None}

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    @property
    def running(self) -> int:
        return len(self.trials)

    def start(self) -> None:
        """Say what the two metrics are; on a terminal, show the table of running trials."""
        self._say(LEGEND)
        if self.view == TABLE and self._live is None:
            from search.console.live import LiveTrials

            self._live = LiveTrials(self.table, self._console).start()

    def close(self) -> None:
        """Remove the live table and print the status line once in its place."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._say(self.status_line())

    def trial_finished(
        self, trial: Any, state: str, final: TrialEpoch | None, error: str = "", reason: str = ""
    ) -> None:
        """Called by the tracking callback when a trial ends (`reason`: why a failed trial failed)."""
        number = _number(trial)
        self.trials.pop(number, None)
        self.counts[state] = self.counts.get(state, 0) + 1
        self.finish_times.append(time.time() - self.started)
        params = {k: v for k, v in trial.config.items() if not k.startswith("_")}
        if state == "complete" and final:
            value = final.cv_auc
            if math.isfinite(value) and (self.best is None or value > self.best[0]):
                self.best = (value, params)
        if state == "failed":
            reason = reason or "unknown"
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            first = error.strip().splitlines()[-1] if error.strip() else "see the Ray trial log"
            self._say(f"trial {number} failed ({reason}): {first}")
        else:
            self._say(self._finished_line(number, state, final, params))
        if self.view == LINES:
            self.print_line()

    def _finished_line(self, number: int, state: str, final: TrialEpoch | None, params: dict) -> str:
        if final is None:
            return f"trial {number} stopped early before its first epoch ({describe(params)})"
        if state == "complete":
            epochs = f"{final.epoch} epoch" + ("s" if final.epoch != 1 else "")
            return f"trial {number} complete: cv_auc {final.cv_auc:.3f} after {epochs} ({describe(params)})"
        of = f" of {self.max_epochs}" if self.max_epochs else ""
        return (
            f"trial {number} stopped early by ASHA after epoch {final.epoch}{of}: mean_fold_auc "
            f"{final.mean_fold_auc:.3f} ({describe(params)})"
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = {k: v for k, v in trial.config.items() if not k.startswith("_")}
        self.trials[_number(trial)] = Running(params)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune restarts a failed trial (e.g. its node died): say so and why (it counts once, when it ends)."""
        from search.tune.tuning import trial_error

        number = _number(trial)
        self.trials.pop(number, None)
        where = (trial.last_result or {}).get("node", "?")
        error = trial_error(trial).strip()
        reason = error.splitlines()[-1] if error else "see the Ray trial log"
        self._say(
            f"trial {number} failed on node {where}: {reason}; restarting it from scratch (retry "
            f"{trial.num_failures} of {trial.max_failures})"
        )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        number = _number(trial)
        running = self.trials.get(number)
        if running is None:  # a result before its start was seen (a restored trial)
            running = self.trials[number] = Running(
                {k: v for k, v in trial.config.items() if not k.startswith("_")}
            )
        running.epoch, running.mean_fold_auc = int(result.get("epoch", 0)), result.get("mean_fold_auc")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.view == LINES and time.time() - self.last_print >= self.every:
            self.print_line()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def status_line(self, running: bool = False) -> str:
        """`[  12/200] complete 9 pruned 3 failed 0 running 2 | best cv_auc 0.812 (...) | 4m10s ~1h05m left`, with
        the running trials' last epochs when `running`."""
        elapsed = time.time() - self.started
        left = self.budget - self.finished
        remaining = estimate_left(self.finish_times, elapsed, left)
        eta = f"~{_fmt_duration(remaining)} left" if remaining is not None else ""
        best = (
            f"best cv_auc {self.best[0]:.3f} ({describe(self.best[1])})"
            if self.best is not None
            else "best cv_auc -"
        )
        c = self.counts
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        failed = f"failed {c['failed']}" + (f" ({why})" if why else "")
        line = (
            f"[{self.finished:>4}/{self.budget}] complete {c['complete']} pruned {c['pruned']} {failed} "
            f"running {self.running} | {best} | {_fmt_duration(elapsed)} {eta}"
        ).rstrip()
        if running:
            line += "".join(f" | trial {n}: {self._epoch(r)}" for n, r in sorted(self.trials.items()))
        return line

    def _epoch(self, r: Running) -> str:
        if r.mean_fold_auc is None:
            return "first epoch running"
        of = f"/{self.max_epochs}" if self.max_epochs else ""
        return f"epoch {r.epoch}{of}, mean_fold_auc {r.mean_fold_auc:.3f}"

    def print_line(self) -> None:
        """The status line with the running trials (the plain view)."""
        self.last_print = time.time()
        self._say(self.status_line(running=True))

    def rows(self) -> list[list[str]]:
        """The running trials as table rows (COLUMNS)."""
        now, of = time.time(), f"/{self.max_epochs}" if self.max_epochs else ""
        rows = []
        for number, r in sorted(self.trials.items()):
            p = r.params
            rows.append(
                [
                    str(number),
                    str(p.get("backbone")),
                    str(p.get("resolution")),
                    f"{p.get('lr', 0):.1e}",
                    f"{p.get('aug_strength', 0):.2f}",
                    f"{r.epoch}{of}" if r.epoch else "-",
                    "-" if r.mean_fold_auc is None else f"{r.mean_fold_auc:.3f}",
                    _fmt_duration(now - r.started),
                ]
            )
        return rows

    def table(self) -> Any:
        """The live table: the running trials and the status line (rendered anew on every refresh)."""
        from search.console.live import trials_table

        return trials_table(COLUMNS, self.rows(), self.status_line())

    def _say(self, line: str) -> None:
        """A line for the user (above the live table while it is shown). Failed trials are worded to pass
        `--quiet`'s filter (search.console.routing.ALERT)."""
        print(line, file=self.out or sys.stdout, flush=True)


class TuneLines(TrialProgressCallback):
    """In place of Tune's own per-trial lines (Ray 2.60 prints some whatever the verbosity, e.g. "Trial
    run_trial_409cb2ce completed. Last result: ..."): given one of its kind, Tune adds none of its own. The user
    sees `Progress`; the log file gets one line per Tune trial's end naming its Optuna trial, through Tune's
    public callback hooks."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        pass  # each epoch is in `Progress`'s status line and the trial's MLflow run

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, "errored")

    @staticmethod
    def _log(trial: Any, how: str) -> None:
        number = (getattr(trial, "config", None) or {}).get(OPTUNA_NUMBER_KEY, "?")
        epoch = (getattr(trial, "last_result", None) or {}).get("training_iteration", 0)
        logging.getLogger("ray.tune.progress_reporter").info(
            "Tune trial %s (Optuna trial %s) %s after %s epoch(s)", trial, number, how, epoch
        )


def best_complete(study: optuna.Study) -> tuple[float, dict] | None:
    """Best finished-to-the-end trial so far as (cv_auc, params)."""
    best = best_trial(study)
    return (best.value, trial_config(best)) if best is not None else None


def progress_view(verbosity: str | None) -> str:
    """The live table on an interactive terminal, plain lines elsewhere (CI, pipes) and with --quiet (which shows
    only the failed trials of them)."""
    from search.console.live import interactive
    from search.console.routing import QUIET

    return TABLE if verbosity != QUIET and interactive() else LINES
