"""Store URLs with passwords: shown with `***`, put back together only to connect (no database needed here;
tests/search/test_postgres.py runs the whole path on a real PostgreSQL server)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from search.study import locations as credentials
from search.study.locations import (
    STORAGE_ENV,
    TRACKING_ENV,
    RDBStore,
    StorageError,
    has_password,
    open_storage,
    public,
    public_argv,
    reveal,
    warn_if_on_command_line,
)


@pytest.fixture(autouse=True)
def _forget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no password remembered and none in the environment."""
    monkeypatch.setattr(credentials, "_known", {})
    for name in (STORAGE_ENV, TRACKING_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://stage:s3cret@db.lab:5432/optuna", "postgresql://stage:***@db.lab:5432/optuna"),
        (
            "postgresql+psycopg://stage:p%40ss@db/optuna?sslmode=require",
            "postgresql+psycopg://stage:***@db/optuna?sslmode=require",
        ),
        (
            "postgresql://stage@db/optuna?password=s3cret&sslmode=require",
            "postgresql://stage:***@db/optuna?sslmode=require",
        ),
        ("mysql+pymysql://stage:s3cret@db/optuna", "mysql+pymysql://stage:***@db/optuna"),
        ("http://user:s3cret@mlflow.lab:5000", "http://user:***@mlflow.lab:5000"),
        ("postgresql://stage@db/optuna", "postgresql://stage@db/optuna"),
        ("sqlite:////runs/study/optuna.db", "sqlite:////runs/study/optuna.db"),
        ("http://mlflow.lab:5000", "http://mlflow.lab:5000"),
        ("databricks", "databricks"),
    ],
)
def test_public_hides_only_the_password(url: str, shown: str) -> None:
    assert public(url) == shown
    assert public(shown) == shown  # already public
    assert has_password(url) == (shown != url)
    assert not has_password(shown)


def test_a_url_given_to_this_process_is_revealed_from_memory() -> None:
    shown = public("postgresql://stage:s3cret@db/optuna")
    assert reveal(shown) == "postgresql://stage:s3cret@db/optuna"
    assert reveal("postgresql://other:***@db/optuna") == "postgresql://other@db/optuna"


def test_the_environment_gives_the_password_of_the_same_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORAGE_ENV, "postgresql://stage:s3cret@db/optuna")
    assert reveal("postgresql://stage:***@db/optuna") == "postgresql://stage:s3cret@db/optuna"
    assert reveal("postgresql://stage@db/optuna") == "postgresql://stage:s3cret@db/optuna"
    # another database, user or host: not this URL's password; libpq may still find one (PGPASSWORD, ~/.pgpass)
    assert reveal("postgresql://stage:***@db/other") == "postgresql://stage@db/other"
    assert reveal("postgresql://stage:***@db/optuna", TRACKING_ENV) == "postgresql://stage@db/optuna"
    monkeypatch.setenv(TRACKING_ENV, "http://user:s3cret@mlflow.lab:5000")
    assert reveal("http://user:***@mlflow.lab:5000", TRACKING_ENV) == "http://user:s3cret@mlflow.lab:5000"


def test_a_recorded_command_line_hides_passwords() -> None:
    argv = [
        "--storage",
        "postgresql://stage:s3cret@db/optuna",
        "--tracking-uri=http://u:s3cret@h:5000",
        "--budget",
        "3",
    ]
    assert public_argv(argv) == [
        "--storage",
        "postgresql://stage:***@db/optuna",
        "--tracking-uri=http://u:***@h:5000",
        "--budget",
        "3",
    ]


def test_a_password_on_the_command_line_is_warned_about(capsys: pytest.CaptureFixture) -> None:
    warn_if_on_command_line("--storage", "postgresql://stage:s3cret@db/optuna", STORAGE_ENV)
    warn_if_on_command_line("--storage", "postgresql://stage@db/optuna", STORAGE_ENV)
    warn_if_on_command_line("--storage", None, STORAGE_ENV)
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1
    assert (
        "--storage" in out.err
        and "PGPASSWORD" in out.err
        and STORAGE_ENV in out.err
        and "s3cret" not in out.err
    )


def test_a_refused_connection_names_the_store_without_its_password() -> None:
    with pytest.raises(StorageError) as caught:
        open_storage("postgresql://stage:s3cret@127.0.0.1:1/optuna")  # nothing listens on port 1
    message = str(caught.value)
    assert "postgresql://stage:***@127.0.0.1:1/optuna" in message and "s3cret" not in message
    assert "PGPASSWORD" in message and STORAGE_ENV in message


def _racing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, losses: int) -> tuple[str, list[int]]:
    """A new SQLite storage whose first `losses` opens lose the schema-creation race: another process creates
    the whole storage (for real) in between, and this one's version row then fails on the UNIQUE constraint."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = [0]

    def store(url_: str, **kwargs: object) -> RDBStore:
        calls[0] += 1
        if calls[0] <= losses:
            optuna.storages.RDBStorage(url_)  # the other process, first to write its version row
            raise sqlalchemy.exc.IntegrityError(
                "INSERT INTO alembic_version (version_num) VALUES (?)",
                ("v3.2.0.a",),
                sqlite3.IntegrityError("UNIQUE constraint failed: alembic_version.version_num"),
            )
        return RDBStore(url_, **kwargs)

    monkeypatch.setattr(credentials, "RDBStore", store)
    monkeypatch.setattr(credentials, "SCHEMA_RETRY_WAITS", (0.01, 0.01, 0.01))
    return url, calls


def test_a_storage_whose_schema_another_process_just_made_opens_on_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = _racing_store(tmp_path, monkeypatch, losses=1)
    storage = open_storage(url)
    assert calls == [2] and isinstance(storage, RDBStore)
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 1)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 1


def test_a_storage_that_keeps_failing_its_schema_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = _racing_store(tmp_path, monkeypatch, losses=10)
    with pytest.raises(StorageError, match="UNIQUE constraint failed: alembic_version.version_num"):
        open_storage(url)
    assert calls == [4]  # the first try and one per wait
