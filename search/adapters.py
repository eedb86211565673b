"""The only private parts of Ray, Optuna and MLflow this project touches, each with the reason it must.

Everything else uses the libraries' public APIs (the searcher is Tune's `Searcher` over Optuna's ask/tell, the
progress lines Tune's callback hooks). `tests/test_private_apis.py` finds, by reading the code, any other use of
a private name of theirs; `tests/search/test_adapters.py` fails loudly when an upgrade renames what is here.

- **Optuna's cached storage calls private methods of the RDB storage.** A search's study storage is Optuna's
  cache over our `RDBStore`, and the cache calls `_get_trials`, `_create_new_trial`, `_set_trial_param` and
  `_get_best_trial_id` instead of the public `BaseStorage` methods. Waiting for a restarted database
  (`search.guard.db_wait`) must wrap those too, or a restart during a suggestion ends the search.
- **MLflow prints registry events past logging.** "Successfully registered model ..." and "Created version ..."
  go to stderr through MLflow's own event stream (`mlflow.utils.logging_utils.MLFLOW_LOGGING_STREAM`, which
  MLflow's own code turns back on after it is disabled), so neither logging's configuration nor MLflow's
  documented `MLFLOW_LOGGING_LEVEL` keeps them off the terminal. `route_mlflow_events` sends its writes to a
  function of ours instead (the console's log file).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: The RDB storage's private methods Optuna's cache calls (see above), made again by `search.guard.db_wait`.
OPTUNA_CACHED_STORAGE_CALLS = ("_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id")
#: The one of them that writes a trial's parameter: `(trial_id, param_name, param_value_internal, distribution)`.
OPTUNA_SET_TRIAL_PARAM = "_set_trial_param"
#: Where MLflow keeps its event stream (an object with `write`, `flush` and an `enabled` flag).
MLFLOW_EVENTS = ("mlflow.utils.logging_utils", "MLFLOW_LOGGING_STREAM")


def mlflow_event_stream() -> Any:
    """MLflow's event stream, or None while MLflow is not imported (this module imports none of the libraries:
    the rooms below the search may use its names)."""
    module, name = MLFLOW_EVENTS
    return getattr(sys.modules.get(module), name, None)


def route_mlflow_events(write: Callable[[str], Any]) -> Callable[[], None] | None:
    """MLflow's event writes go to `write` while the stream is enabled; the undo, or None when there is nothing
    to route (MLflow not imported, or routed before)."""
    stream = mlflow_event_stream()
    if stream is None or "write" in vars(stream):
        return None
    stream.write = lambda text: write(text) if stream.enabled else None
    stream.flush = lambda: None

    def undo() -> None:
        vars(stream).pop("write", None)
        vars(stream).pop("flush", None)

    return undo
