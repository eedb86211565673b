"""The storage calls Optuna's cache makes (its private `_set_trial_param`, `_create_new_trial`) wait for a database
that does not answer, and a parameter whose write went through before its reply was lost is not written twice."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from search.guard.db_wait import wait_for_database


def _lost(after_write: bool):
    """A `_set_trial_param` that fails once as a restarted server does, before or after writing."""
    original = optuna.storages.RDBStorage._set_trial_param
    calls = {"n": 0}

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 1:
            if after_write:
                original(self, *args)
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("terminating connection"))
        return original(self, *args)

    return flaky, calls


@pytest.mark.parametrize("after_write", [False, True], ids=["before the write", "after the write"])
def test_a_suggested_parameter_survives_a_lost_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, after_write: bool
) -> None:
    flaky, calls = _lost(after_write)

    class Store(optuna.storages.RDBStorage):
        _set_trial_param = flaky

    Waiting = wait_for_database(Store)
    monkeypatch.setattr("search.guard.db_wait.time.sleep", lambda s: None)
    study = optuna.create_study(storage=Waiting(f"sqlite:///{tmp_path / 'o.db'}"), study_name="s")
    trial = study.ask()
    assert trial.suggest_float("lr", 0.5, 0.5) == 0.5  # through the cache, as a search suggests
    assert calls["n"] == 2
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.params == {"lr": 0.5}
    err = capsys.readouterr().err
    assert "the database does not answer" in err and "answers again" in err
