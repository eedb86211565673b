"""What `search/adapters.py` relies on in Optuna and MLflow is still there, and still does what it says."""

from __future__ import annotations

import inspect

import optuna

from search import adapters


def test_the_installed_libraries_still_have_what_the_adapters_use() -> None:
    import mlflow  # noqa: F401 (loads its event stream's module)

    gone = [
        name
        for name in adapters.OPTUNA_CACHED_STORAGE_CALLS
        if not callable(getattr(optuna.storages.RDBStorage, name, None))
    ]
    assert gone == [], f"Optuna's RDB storage no longer has {gone}: update search/adapters.py"
    stream = adapters.mlflow_event_stream()
    assert all(hasattr(stream, a) for a in ("write", "flush", "enabled")), (
        f"MLflow moved {'.'.join(adapters.MLFLOW_EVENTS)}: update search/adapters.py"
    )


def test_optunas_cache_still_calls_the_private_storage_methods_we_wrap() -> None:
    cache = inspect.getsource(optuna.storages._cached_storage)  # noqa: SLF001 (the reason for the adapter)
    called = [name for name in adapters.OPTUNA_CACHED_STORAGE_CALLS if f"_backend.{name}(" in cache]
    assert called == list(adapters.OPTUNA_CACHED_STORAGE_CALLS), (
        "Optuna's cache no longer calls these private storage methods: search.guard.db_wait may wrap fewer"
    )


def test_mlflow_events_are_routed_while_enabled_and_restored(capsys) -> None:
    from mlflow.utils.logging_utils import eprint

    seen: list[str] = []
    undo = adapters.route_mlflow_events(seen.append)
    assert undo is not None and adapters.route_mlflow_events(seen.append) is None  # routed once
    try:
        eprint("Successfully registered model 'x'.")
        stream = adapters.mlflow_event_stream()
        stream.enabled = False
        eprint("not shown")
        stream.enabled = True
    finally:
        undo()
    assert "".join(seen) == "Successfully registered model 'x'.\n"
    eprint("back to stderr")
    assert capsys.readouterr().err == "back to stderr\n"
