"""The only private attributes of Ray, Optuna and MLflow this project touches, kept in one place.

Ray's `OptunaSearch` has no public way to name the Optuna trial behind a Tune trial, nor to record a trial
the scheduler stopped as PRUNED (it tells Optuna COMPLETE with the low-fidelity value). `StageSearch` needs
its `_ot_trials` (Tune trial id -> optuna.Trial), `_ot_study` and `_completed_trials`; everything else in the
project uses public APIs. `tests/search/test_adapters.py` fails loudly when an upgrade renames these.
"""

from __future__ import annotations

from typing import Any

import optuna

#: OptunaSearch attributes read or changed here, and what each must be.
REQUIRED: dict[str, type] = {"_ot_trials": dict, "_completed_trials": set}
#: Set once the searcher has created its study (after `set_search_properties` or construction with a space).
STUDY_ATTR = "_ot_study"


def missing(searcher: Any) -> list[str]:
    """Attributes this module relies on that `searcher` lacks or holds with another type."""
    gone = [name for name, kind in REQUIRED.items() if not isinstance(getattr(searcher, name, None), kind)]
    if not isinstance(getattr(searcher, STUDY_ATTR, None), optuna.Study):
        gone.append(STUDY_ATTR)
    return gone


def optuna_trial(searcher: Any, trial_id: str) -> optuna.Trial | None:
    """The Optuna trial behind Tune trial `trial_id` (None when the searcher did not suggest it)."""
    return searcher._ot_trials.get(trial_id)


def optuna_study(searcher: Any) -> optuna.Study:
    """The study the searcher asks and tells."""
    return getattr(searcher, STUDY_ATTR)


def is_completed(searcher: Any, trial_id: str) -> bool:
    """Whether the searcher already told Optuna the end of `trial_id`."""
    return trial_id in searcher._completed_trials


def mark_completed(searcher: Any, trial_id: str) -> None:
    """Record that the end of `trial_id` was told (so the searcher never tells it twice)."""
    searcher._completed_trials.add(trial_id)
