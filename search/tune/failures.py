"""Trials that fail alone, and when failures mean the whole search should stop.

A trial catches its own errors (`search.tune.trainable`), writes why to `trials/<n>/failure.json` and ends
normally, so Tune's retries (`FailureConfig`) are left for what they are good at: a worker process or node
that dies. The driver reads the record and tells Optuna FAIL (user attributes `fail_reason`, `error`) and
MLflow FAILED (tags `fail_reason`, `error`). A failure that escapes a trial anyway reaches Tune as an error
and is recorded with the reason `worker_error`.

The stop rule: when the first 3 trials a session finishes all failed, or 5 in a row failed, the cause is
most likely the setup (data, device, environment), not the sampled configurations, so the search starts no
new trial (running trials finish) and says why, rather than spending the rest of the budget on failures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

WORKER_ERROR = (
    "worker_error"  # an error Tune saw: the trial's process failed outside the trial's own handling
)
STOP_FIRST = 3  # stop when the first this-many finished trials of a session all failed
STOP_IN_A_ROW = 5  # ... or when this many finished trials in a row failed


def stop_message(outcomes: Sequence[str | None], last_error: str = "", study: str = "") -> str | None:
    """Why the search should stop, or None. `outcomes`: a session's finished trials in finishing order, each
    the failure reason of a failed trial or None for a complete or pruned one."""
    first = list(outcomes[:STOP_FIRST])
    if len(first) == STOP_FIRST and all(first):
        why, failed = f"the first {STOP_FIRST} trials all failed", first
    else:
        run: list[str] = []
        for reason in outcomes:
            run = [*run, reason] if reason else []
            if len(run) == STOP_IN_A_ROW:
                break
        if len(run) < STOP_IN_A_ROW:
            return None
        why, failed = f"{STOP_IN_A_ROW} trials in a row failed", run
    counts = ", ".join(f"{r} {n}" for r, n in sorted(Counter(failed).items(), key=lambda kv: (-kv[1], kv[0])))
    last = f"; last error: {last_error}" if last_error else ""
    resume = f"stagesearch run --study {study} --resume" if study else "--resume"
    return (
        f"search stopped: {why} ({counts}){last}. This points at the setup (data, device, environment) "
        f"rather than the sampled configurations, so no new trial was started; fix the cause and continue "
        f"with `{resume}`"
    )
