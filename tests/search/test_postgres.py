"""A shared study on a real PostgreSQL server: Optuna storage and an MLflow tracking server on the same
database server, a search, its resume, optuna-dashboard and the report, and the database password nowhere
it must not be (output, study folder, MLflow, the command lines of the processes started).

The server is Debian's PostgreSQL (`apt-get install postgresql`), started from its binaries on 127.0.0.1
with a data folder of its own and password (scram) authentication; outside CI the test skips without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from search.study import STORAGE_ENV
from tests.search.conftest import DIRECT, ROOT, free_port, mlflow_server, search_args
from tests.search.pg_server import ROLE, Postgres, running_postgres

pytestmark = pytest.mark.slow

STUDY = "shared"
URL_LINE = re.compile(r": (http://127\.0\.0\.1:\d+/\S*)$", re.M)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


class Watcher(threading.Thread):
    """Samples the command lines of every process this test process has started, and their descendants
    (every line a process showed: a child shows its parent's line between fork and exec)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[tuple[int, str]] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stopped.is_set():
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for proc in children:
                try:
                    self.seen.add((proc.pid, " ".join(proc.cmdline())))
                except psutil.Error:  # gone meanwhile
                    pass
            self.stopped.wait(0.3)


@dataclass
class Shared:
    """Everything the module's session left: outputs of each command, the folders, the servers."""

    pg: Postgres
    tracking: str
    runs: Path
    server: Path  # the MLflow server's log and artifacts
    ray_tmp: Path  # RAY_TMPDIR of the searches
    outputs: dict[str, str] = field(default_factory=dict)
    watcher: Watcher = field(default_factory=Watcher)
    careless: str = ""  # the command line of the run given the password on it (the user's choice)


def _env(ray_tmp: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a user's shell with no credential in it, plus `extra`."""
    drop = ("PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE", STORAGE_ENV, "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PGPASSFILE"] = os.devnull  # a ~/.pgpass of the machine's user must not answer for the test
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return {**env, **extra}


def _stagesearch(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stagesearch", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:  # whatever the command left (Ray's processes): its own process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return proc.returncode, out


@pytest.fixture(scope="module")
def tracking_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """An MLflow tracking server on the same PostgreSQL (database `mlflow`), its store URI in its environment."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    env = _env(MLFLOW_BACKEND_STORE_URI=postgres.url("mlflow"), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with mlflow_server(folder, [], env=env) as url:
        yield url, folder


@pytest.fixture(scope="module")
def shared(postgres: Postgres, tracking_server, tiny_cohort: Path, tmp_path_factory) -> Iterator[Shared]:
    """Search (password on its command line), resume with registration and optuna-dashboard (password in
    STAGESEARCH_STORAGE), the report (password in PGPASSWORD), and the report without any password; each as a
    user runs it, with Ray's session folders (its logs) in a folder of the test's own."""
    tracking, server_folder = tracking_server
    runs = tmp_path_factory.mktemp("pg") / "runs"
    s = Shared(
        postgres, tracking, runs, server_folder, Path(tempfile.mkdtemp(prefix="ssray-"))
    )  # short: sockets
    s.watcher.start()
    try:
        common = ["--scheduler", "fifo", "--max-epochs", "1", "--cpus-per-trial", "1", "--num-cpus", "2"]
        first = _stagesearch(
            "run",
            *search_args(
                tiny_cohort,
                runs,
                STUDY,
                "--budget",
                "2",
                *common,
                "--storage",
                postgres.url("optuna"),
                "--tracking-uri",
                tracking,
                "--no-register",
            ),
            env=_env(s.ray_tmp),
        )
        s.careless = " ".join(first.args)
        code, s.outputs["run"] = _finish(first)
        assert code == 0, s.outputs["run"]
        resume = _stagesearch(
            "run",
            "--runs-dir",
            str(runs),
            "--study",
            STUDY,
            "--resume",
            "--budget",
            "4",
            *common,
            env=_env(s.ray_tmp, **{STORAGE_ENV: postgres.url("optuna")}),
        )
        code, s.outputs["resume"] = _finish(resume)
        assert code == 0, s.outputs["resume"]
        s.outputs["dashboard"] = _browse(s)
        report = _stagesearch(
            "report", "--runs-dir", str(runs), "--study", STUDY, env=_env(PGPASSWORD=postgres.password)
        )
        code, s.outputs["report"] = _finish(report, 300)
        assert code == 0, s.outputs["report"]
        bare = _stagesearch(
            "report", "--runs-dir", str(runs), "--study", STUDY, "--out", str(runs.parent / "r2"), env=_env()
        )
        s.outputs["report without password"] = f"{_finish(bare, 300)[1]}\nexit code {bare.returncode}"
        yield s
    finally:
        s.watcher.stopped.set()
        s.watcher.join(5)
        shutil.rmtree(s.ray_tmp, ignore_errors=True)


def _browse(s: Shared) -> str:
    """`stagesearch dashboard` on the study; its API must list the study's 4 trials. Returns its output."""
    port = free_port()
    log = s.runs.parent / "dashboard.log"
    cmd = [
        sys.executable,
        "-m",
        "stagesearch",
        "dashboard",
        "--runs-dir",
        str(s.runs),
        "--study",
        STUDY,
        "--port",
        str(port),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(**{STORAGE_ENV: s.pg.url("optuna")}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not URL_LINE.search(log.read_text()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        with DIRECT.open(f"http://127.0.0.1:{port}/api/studies", timeout=30) as r:
            listed = [x for x in json.loads(r.read())["study_summaries"] if x["study_name"] == STUDY]
        assert len(listed) == 1, listed
        with DIRECT.open(f"http://127.0.0.1:{port}/api/studies/{listed[0]['study_id']}", timeout=30) as r:
            detail = json.loads(r.read())
        assert sorted(t["number"] for t in detail["trials"]) == [0, 1, 2, 3]
        with DIRECT.open(URL_LINE.search(log.read_text()).group(1), timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the launcher stops its server
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    return log.read_text()


# --- the shared study works --------------------------------------------------------------------------------


def test_search_and_resume_share_the_postgres_study(shared: Shared) -> None:
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=shared.pg.url("optuna"))
    assert len([t for t in study.trials if t.state.is_finished()]) == 4
    assert "2 of 4 trials finished before this session" in shared.outputs["resume"]
    client = MlflowClient(tracking_uri=shared.tracking)
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.role = 'trial'")
    assert sorted(int(r.data.tags["optuna_trial"]) for r in runs) == [0, 1, 2, 3]
    config = json.loads((shared.runs / STUDY / "config.json").read_text())
    assert config["storage"] == f"postgresql://{ROLE}:***@127.0.0.1:{shared.pg.port}/optuna"
    assert "--storage" in config["sessions"][0]["argv"]  # recorded, with the password hidden
    for session in ("run", "resume"):  # which database, said without its password
        assert f"optuna storage: {config['storage']}" in shared.outputs[session]


def test_a_password_on_the_command_line_is_warned_about_once(shared: Shared) -> None:
    warned = [line for line in shared.outputs["run"].splitlines() if "process list" in line]
    assert len(warned) == 1 and "PGPASSWORD" in warned[0] and STORAGE_ENV in warned[0]
    assert "process list" not in shared.outputs["resume"]
    assert "give them to these commands in the environment" in shared.outputs["run"]


def test_without_a_password_the_report_says_where_to_give_it(shared: Shared) -> None:
    out = shared.outputs["report without password"]
    assert out.rstrip().endswith("exit code 2"), out
    assert "PGPASSWORD" in out and STORAGE_ENV in out and "no password supplied" in out
    assert f"{ROLE}:***@127.0.0.1:{shared.pg.port}/optuna" in out


def test_the_report_is_written(shared: Shared) -> None:
    html = (shared.runs / STUDY / "report" / "report.html").read_text()
    assert f"Study {STUDY}" in html


# --- the password is nowhere it must not be -----------------------------------------------------------------


def test_no_output_holds_the_password(shared: Shared) -> None:
    assert len(shared.outputs) == 5
    for name, text in shared.outputs.items():
        assert shared.pg.password not in text, f"the password is in the output of {name}"


def test_no_file_of_the_study_holds_the_password(shared: Shared) -> None:
    files = [p for p in shared.runs.rglob("*") if p.is_file()]
    assert {"config.json", "state.json", "leaderboard.json", "report.html"} <= {p.name for p in files}
    assert any(p.suffix == ".pkl" for p in files), "Ray's pickled searcher state was not found"
    leaking = [str(p) for p in files if shared.pg.password.encode() in p.read_bytes()]
    assert not leaking, f"files holding the password: {leaking}"


def test_mlflow_holds_no_password(shared: Shared) -> None:
    client = MlflowClient(tracking_uri=shared.tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert len(runs) >= 5  # the parent and four trials
    for run in runs:
        text = json.dumps([run.data.params, run.data.tags, run.info.run_name])
        assert shared.pg.password not in text, f"run {run.info.run_id} holds the password"
    stored = [p for p in shared.server.rglob("*") if p.is_file()]
    assert "server.log" in {p.name for p in stored} and len(stored) > 1, (
        "no artifact reached the MLflow server"
    )
    assert not [str(p) for p in stored if shared.pg.password.encode() in p.read_bytes()]


def test_no_file_ray_wrote_holds_the_password(shared: Shared) -> None:
    files = [p for p in shared.ray_tmp.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and any(p.suffix == ".pkl" for p in files), (
        "no Ray session seen"
    )
    leaking = [str(p) for p in files if shared.pg.password.encode() in p.read_bytes()]
    assert not leaking, f"files holding the password: {leaking}"


def test_no_command_line_holds_the_password(shared: Shared) -> None:
    lines = {cmd for _, cmd in shared.watcher.seen}
    for name in (
        "raylet",
        "gcs_server",
        "default_worker",
        "optuna_server.py",
        "mlflow server",
        "stagesearch dashboard",
    ):
        assert any(name in cmd for cmd in lines), f"{name} was never seen running: {sorted(lines)}"
    # The first run was given the password on its own command line (the user's choice, warned about); nothing
    # started after or by it may repeat it.
    assert shared.pg.password in shared.careless
    leaking = [cmd for cmd in lines if shared.pg.password in cmd and cmd != shared.careless]
    assert not leaking, f"command lines holding the password: {leaking}"
