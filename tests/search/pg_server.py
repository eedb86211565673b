"""A real PostgreSQL server for tests: Debian's binaries started on 127.0.0.1 with a data folder of its own
and password (scram) authentication; stopped (by its process id if need be) and removed afterwards. Outside CI a
test skips without it; under CI (`CI=true`) a missing server is a failure."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.search.conftest import free_port

ROLE = "stage"


def _unavailable(reason: str) -> None:
    """Skip with the reason; under CI a missing PostgreSQL is a failure, not a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def _pg_bin() -> Path:
    """Debian's PostgreSQL binaries (the newest installed version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        _unavailable("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A PostgreSQL server on 127.0.0.1 with a role `stage` (password auth) owning two databases; `stop()` and
    `start()` restart it on the same port and data (a server restarted under a running search)."""

    port: int
    password: str
    bindir: Path = Path()
    base: Path = Path()
    as_user: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{ROLE}{secret}@127.0.0.1:{self.port}/{database}"

    def run(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess:
        """A server binary, as the server's user."""
        return subprocess.run(
            [*self.as_user, str(self.bindir / cmd[0]), *cmd[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            **kw,
        )

    def start(self) -> None:
        """pg_ctl start, waiting until it accepts connections."""
        opts = f"-k {self.base} -h 127.0.0.1 -p {self.port}"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", "-o", opts)

    def stop(self) -> None:
        """pg_ctl stop (fast: open sessions are ended); the server's pid (postmaster.pid) killed if it is still
        there."""
        pidfile = self.data / "postmaster.pid"
        pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        if pid is not None and psutil.pid_exists(pid) and pidfile.exists():
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb + pg_ctl start in a temporary folder (as the `postgres` user when the test runs as root, since
    PostgreSQL refuses to run as root); stopped and removed afterwards."""
    try:
        import psycopg  # noqa: F401  (the driver of the `postgres` extra)
    except ImportError:
        _unavailable("no PostgreSQL driver: pip install -e '.[postgres]'")
    bindir = _pg_bin()
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run the server as")
        if shutil.which("runuser") is None:
            _unavailable("running as root and runuser (util-linux) is missing")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="stagesearch-pg-"))  # 0700: only its owner reaches the socket
    if as_user:
        os.chown(base, account.pw_uid, account.pw_gid)
    pg = Postgres(free_port(), "pg-" + secrets.token_hex(12), bindir, base, as_user)
    started = False
    try:
        pg.run(
            "initdb",
            "-D",
            str(pg.data),
            "-U",
            "admin",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        pg.start()
        started = True
        # The role's password goes in on stdin, so no command line ever holds it.
        sql = (
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{pg.password}';\n"
            f"CREATE DATABASE optuna OWNER {ROLE};\nCREATE DATABASE mlflow OWNER {ROLE};\n"
        )
        pg.run(
            "psql",
            "-h",
            str(base),
            "-p",
            str(pg.port),
            "-U",
            "admin",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            "-",
            input=sql,
        )
        yield pg
    except subprocess.CalledProcessError as exc:
        logged = pg.log.read_text() if pg.log.exists() else ""
        raise AssertionError(f"{exc.cmd}: {exc.stdout}{exc.stderr}{logged}") from None
    finally:
        if started:
            pg.stop()
        shutil.rmtree(base, ignore_errors=True)
