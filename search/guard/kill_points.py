"""Named points where a test kills the driver (SIGKILL, no clean-up), to prove that `--resume` recovers from
each: `STAGESEARCH_TEST_KILL=<point>@<n>` kills the process the n-th time it passes `<point>` (n from 1; a test
draws it from a seed). Test-only, like `STAGESEARCH_TEST_FAULTS`; unset, a point costs one dictionary look-up.

The points (`POINTS`): a trial running (the driver got one of its epochs), a trial's last report in and
Optuna not yet told, registration under way (the model logged to MLflow, its version not yet tagged and
aliased), and `leaderboard.json` half written (its temporary file written, not yet in place), in the order a
search's end passes them: the leaderboard is written once, after registration.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "STAGESEARCH_TEST_KILL"
POINTS = ("trial_running", "before_optuna_tell", "registering", "writing_leaderboard")

_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Kill this process here when `KILL_ENV` names `name` and this is its n-th pass."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point not in POINTS:
        raise ValueError(f"{KILL_ENV}={wanted!r}: unknown point; known: {', '.join(POINTS)}")
    if point != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
