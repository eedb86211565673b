"""Tracking that never stops a search: what the driver cannot log to MLflow waits in the study folder.

Optuna is the study's record; MLflow is its mirror. The driver logs every trial through `TrackingOutbox`, which
calls `StudyTracker` while the tracking server answers. When a call fails (the server stopped, unreachable, a
full disk under a file store) the outbox says so in one warning line, keeps that call and every later one, in
order, in `runs/<study>/pending-tracking.jsonl` (one JSON line each, written as it is kept), and tries again
from time to time (after 30 s, then less often, at most 5 minutes apart); once the server answers, it sends what it kept
and says so. A trial's state never depends on any of this: Tune and Optuna do not see tracking errors.

At the end of a search `flush(wait_s)` waits a bounded time for the server; what is still kept then stays in
the file, and `stagesearch sync-tracking --study NAME` sends it later (`replay`). The calls are kept with the
run ids they already have, so a later process logs them to the same runs; a trial whose run could not even be
created gets its run when the calls are sent (its `optuna_trial` tag names the trial; Optuna notes the run id as
`mlflow_run_id` only while the trial still runs: it keeps a finished trial as it is).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.study.results import TrialEpoch
from trainers.atomic import write_text_atomic

PENDING_FILE = "pending-tracking.jsonl"
#: seconds to the first retry (`RETRY_ENV` sets another), and the most between two retries (the wait doubles
#: after each failed one)
RETRY_FIRST_S, RETRY_MAX_S = 30.0, 300.0
RETRY_ENV = "STAGESEARCH_TRACKING_RETRY_S"
FLUSH_EVERY_S = 5.0  # at the end of a search, waiting for tracking: how often to try
#: the MLflow client's own retries, made short in the driver (where the user has not set them): with its
#: defaults (7 retries, backoff factor 2, 120 s timeout) one call to a stopped server blocks for minutes
CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def short_client_retries() -> None:
    """Set `CLIENT_RETRIES` where the user has not (before the first MLflow client is made)."""
    for name, value in CLIENT_RETRIES.items():
        os.environ.setdefault(name, value)


def tracking_errors() -> tuple[type[BaseException], ...]:
    """What a failing tracking server or store raises through the MLflow client."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException, OSError)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


class TrackingOutbox:
    """The driver's tracking calls for trials, sent now or kept and sent later (see the module's text).

    `on_run(number, run_id)` is told each trial's run id once its run exists (the driver notes it on the Optuna
    trial); `log` prints the warning and recovery lines."""

    def __init__(
        self,
        tracker: Any,
        folder: Path,
        on_run: Callable[[int, str], None] | None = None,
        log: Callable[[str], None] = lambda line: print(line, flush=True),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self.path = Path(folder) / PENDING_FILE
        self.on_run = on_run
        self.log = log
        self.clock = clock
        self.pending: list[dict[str, Any]] = read_pending(self.path)  # an earlier session's, if it left any
        self.first_retry = float(os.environ.get(RETRY_ENV, RETRY_FIRST_S))
        self.retry_in = self.first_retry
        self.next_try = clock()  # an earlier session's calls are tried at once
        self.failures = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # Ray pickles the callbacks with the Tuner's state
        state.pop("log", None)
        state.pop("clock", None)
        state.pop("on_run", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.log, self.clock, self.on_run = (lambda line: print(line, flush=True)), time.monotonic, None

    # the calls of the Tune callback
    def start_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> None:
        self._submit({"op": "start_trial", "number": number, "params": params, "tags": tags})

    def log_epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        self._submit({"op": "log_epoch", "number": number, "epoch": epoch, "metrics": metrics})

    def tag_trial(self, number: int, tags: dict[str, str]) -> None:
        self._submit({"op": "tag_trial", "number": number, "tags": tags})

    def retry_trial(self, number: int, failures: int, error: str) -> None:
        self._submit({"op": "retry_trial", "number": number, "failures": failures, "error": error})

    def finish_trial(
        self,
        number: int,
        state: str,
        final: TrialEpoch | None,
        oof: Path | None = None,
        error: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        op = {"op": "finish_trial", "number": number, "state": state, "error": error, "tags": tags or {}}
        op["final"] = final.to_result() if final is not None else None
        op["oof"] = str(oof) if oof is not None else None
        self._submit(op)

    @property
    def healthy(self) -> bool:
        """Nothing is waiting to be sent."""
        return not self.pending

    def poll(self) -> None:
        """Try to send what is kept, when its retry is due (the Tune callback calls this at every step)."""
        if self.pending and self.clock() >= self.next_try:
            self._send_pending()

    def flush(self, wait_s: float, sleep: Callable[[float], None] = time.sleep) -> bool:
        """At the end of a search: send what is kept, trying for at most `wait_s` seconds; True when nothing is
        left. What is left stays in the file (`stagesearch sync-tracking` sends it)."""
        deadline = self.clock() + wait_s
        while self.pending:
            self.next_try = self.clock()
            if self._send_pending() or self.clock() >= deadline:
                break
            # nothing else to do now: try every few seconds, not at the search's backed-off pace
            sleep(min(self.first_retry, FLUSH_EVERY_S, max(deadline - self.clock(), 0.0)))
        return not self.pending

    # inside
    def _submit(self, op: dict[str, Any]) -> None:
        run_id = self.tracker.children.get(op["number"])
        if run_id is not None:
            op["run_id"] = run_id  # so that a later process logs it to the same run
        if self.pending:
            self._keep(op)
            self.poll()
            return
        try:
            self._apply(op)
        except tracking_errors() as exc:
            self._keep(op)
            self._went_down(exc)

    def _apply(self, op: dict[str, Any]) -> None:
        """One kept call, made through the tracker (a call cut short by the failure is made again whole: the
        tracker's calls can be repeated, see `StudyTracker`)."""
        t, number, name = self.tracker, int(op["number"]), op["op"]
        if op.get("run_id") and number not in t.children:
            t.children[number] = op["run_id"]  # a run of an earlier process
        if name == "start_trial":
            run_id = t.start_trial(number, op["params"], op["tags"])
            if self.on_run is not None:
                self.on_run(number, run_id)
        elif name == "log_epoch":
            t.log_epoch(number, int(op["epoch"]), op["metrics"])
        elif name == "tag_trial":
            t.tag_trial(number, op["tags"])
        elif name == "retry_trial":
            t.retry_trial(number, int(op["failures"]), op["error"])
        elif name == "finish_trial":
            final = TrialEpoch.from_result(op["final"]) if op.get("final") else None
            oof = Path(op["oof"]) if op.get("oof") else None
            t.finish_trial(number, op["state"], final, oof, error=op["error"], tags=op["tags"])
        else:
            raise ValueError(f"unknown tracking call {name!r} in {self.path}")

    def _keep(self, op: dict[str, Any]) -> None:
        self.pending.append(op)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(op, default=str) + "\n")
        except OSError:  # a full disk too: kept in memory, sent with the rest (not after a killed driver)
            pass

    def _went_down(self, exc: BaseException) -> None:
        self.failures += 1
        self.retry_in = self.first_retry
        self.next_try = self.clock() + self.retry_in
        self.log(
            f"warning: MLflow tracking at {self.tracker.tracking_uri} failed ({first_line(exc)}). The search goes "
            f"on; what it cannot log is kept in {self.path} and sent when tracking works again"
        )

    def _send_pending(self) -> bool:
        """Send the kept calls in order; True when all went. A failure keeps the rest and backs off."""
        sent = 0
        try:
            while self.pending:
                self._apply(self.pending[0])
                self.pending.pop(0)
                sent += 1
        except tracking_errors():
            self.next_try = self.clock() + self.retry_in
            self.retry_in = min(self.retry_in * 2, RETRY_MAX_S)
            if sent:
                write_pending(self.path, self.pending)
            return False
        self.path.unlink(missing_ok=True)
        self.retry_in = self.first_retry
        if sent:
            self.log(
                f"tracking: MLflow at {self.tracker.tracking_uri} answers again; {sent} kept record(s) sent"
            )
        return True


def read_pending(path: Path) -> list[dict[str, Any]]:
    """The kept calls of `path`, in order (a line cut short by a killed process is dropped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_pending(path: Path, ops: list[dict[str, Any]]) -> None:
    """Replace the file with `ops` atomically (the calls not yet sent)."""
    write_text_atomic(path, "".join(json.dumps(op, default=str) + "\n" for op in ops))
