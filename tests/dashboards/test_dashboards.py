"""Dashboards on the shared real tiny study (conftest.py): the resolver, optuna-dashboard and MLflow UI launchers."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.study import (
    LocationError,
    StudyPaths,
    add_location_flags,
    default_storage_url,
    default_tracking_uri,
    from_args,
    resolve,
)
from tests.dashboards.conftest import STUDY, load_dash_study, run_script
from tests.search.conftest import ROOT

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback servers, never via a proxy
URL_LINE = re.compile(r": (http://127\.0\.0\.1:\d+/\S*)$", re.M)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with DIRECT.open(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Launched:
    """A launcher run as `python dashboards/NAME ...` with its output in a log file, stopped by its pid."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "dashboards" / name), *args],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def url(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = URL_LINE.search(self.log.read_text())
            if found:
                return found.group(1)
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.3)
        raise AssertionError(f"no URL printed within {timeout} s:\n{self.log.read_text()}")

    def stop(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


# --- the shared resolver ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resolve_finds_what_the_search_wrote(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.loads((runs / STUDY / "config.json").read_text())
    monkeypatch.chdir(runs.parent)  # the folder the search ran in: no flag needed
    found = resolve()
    assert found.study == STUDY and found.study_dir == Path("runs") / STUDY
    assert found.storage == config["storage"] and found.tracking_uri == config["tracking_uri"]
    assert found.tracking_uri == default_tracking_uri(runs)

    parser = argparse.ArgumentParser()
    add_location_flags(parser, study_required=True)
    from_flags = from_args(parser.parse_args([]))
    assert from_flags == found
    other = from_args(
        parser.parse_args(["--storage", "sqlite:///elsewhere.db", "--tracking-uri", "http://h:5000"])
    )
    assert other.storage == "sqlite:///elsewhere.db" and other.tracking_uri == "http://h:5000"

    with pytest.raises(LocationError, match="no study named 'nope'.*dash"):
        resolve(runs, "nope")
    with pytest.raises(SystemExit) as exc:
        from_args(parser.parse_args(["--study", "nope"]))
    assert exc.value.code == 2


def test_resolve_without_config_uses_the_search_defaults(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text(json.dumps({"study": "bare"}))
    found = resolve(tmp_path)
    assert found.study == "bare"
    assert found.storage == default_storage_url(StudyPaths(tmp_path / "bare"))
    assert found.tracking_uri == default_tracking_uri(tmp_path)
    empty = resolve(tmp_path / "empty")
    assert empty.study is None and empty.tracking_uri == default_tracking_uri(tmp_path / "empty")
    with pytest.raises(LocationError, match="no study in"):
        empty.require_study()


# --- launchers: help and clear errors -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["optuna_ui.py", "mlflow_ui.py", "report.py"])
def test_launcher_help_runs_as_arun_script(name: str) -> None:
    done = run_script(name, "--help")
    assert done.returncode == 0, done.stderr
    assert "--runs-dir" in done.stdout and "--study" in done.stdout


@pytest.mark.parametrize("name", ["optuna_ui.py", "mlflow_ui.py", "report.py"])
def test_launchers_exit_2_without_a_study(name: str, tmp_path: Path) -> None:
    done = run_script(name, "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: no" in done.stderr and "stagesearch run" in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing created, not even an empty store


def test_mlflow_launcher_refuses_a_remote_tracking_server(tmp_path: Path) -> None:
    done = run_script("mlflow_ui.py", "--runs-dir", str(tmp_path), "--tracking-uri", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "http://127.0.0.1:9" in done.stdout and "nothing to launch" in done.stderr


# --- the servers --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(runs: Path, tmp_path: Path) -> None:
    port = _free_port()
    server = Launched("optuna_ui.py", ["--runs-dir", str(runs), "--port", str(port)], tmp_path / "optuna.log")
    try:
        url = server.url()
        listed = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        ours = [s for s in listed if s["study_name"] == STUDY]
        assert len(ours) == 1
        assert url == f"http://127.0.0.1:{port}/dashboard/studies/{ours[0]['study_id']}"
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{ours[0]['study_id']}")
        expected = load_dash_study(runs).get_trials()
        assert detail["name"] == STUDY
        assert detail["objective_names"] == ["cv_auc"]  # not "Objective 0"
        assert any(a["key"] == "metrics" and "mean_fold_auc" in a["value"] for a in detail["user_attrs"])
        assert [t["number"] for t in detail["trials"]] == [t.number for t in expected]
        assert all(t["state"] == "Complete" for t in detail["trials"])
        assert {t["values"][0] for t in detail["trials"]} == {t.value for t in expected}
        with DIRECT.open(url, timeout=30) as page:  # the page the launcher printed
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        code = server.stop(signal.SIGINT)  # Ctrl-C
    assert code == 0, server.log.read_text()
    assert "stopping" in server.log.read_text()
    assert not _port_open(port)


@pytest.fixture(scope="module")
def mlflow_ui(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, int]]:
    """The MLflow UI launcher on the study, once for the module; stopped with SIGTERM (`kill PID`) at the end."""
    port = _free_port()
    server = Launched(
        "mlflow_ui.py",
        ["--runs-dir", str(runs), "--study", STUDY, "--port", str(port)],
        tmp_path_factory.mktemp("mlflow-ui") / "mlflow.log",
    )
    try:
        yield server, port
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log.read_text()
    deadline = time.monotonic() + 20
    while _port_open(port) and time.monotonic() < deadline:  # the uvicorn worker went with the launcher
        time.sleep(0.3)
    assert not _port_open(port)


@pytest.mark.slow
def test_mlflow_ui_prints_the_runs_table_and_the_model_page(
    runs: Path, mlflow_ui: tuple[Launched, int]
) -> None:
    server, port = mlflow_ui
    url = server.url()
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    experiment = _get(f"{api}/experiments/get-by-name?experiment_name={STUDY}")["experiment"]
    assert experiment["name"] == STUDY
    # The runs table in the "Machine learning" view, not the GenAI overview that `#/experiments/<id>` opens.
    assert (
        url
        == f"http://127.0.0.1:{port}/#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning"
    )
    found = _get(
        f"{api}/runs/search",
        {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": "tags.role = 'trial'",
            "max_results": 100,
        },
    )
    numbers = sorted(int(_tags(r)["optuna_trial"]) for r in found["runs"])
    assert numbers == [0, 1, 2, 3]
    winner = json.loads((runs / STUDY / "winner.json").read_text())
    name, version = winner["model_name"], winner["model_version"]
    _get(f"{api}/registered-models/get?name={name}")
    log = server.log.read_text()
    assert f"registered model {name}: http://127.0.0.1:{port}/#/models/{name}\n" in log
    assert (
        f"version {version} (this study's winner): http://127.0.0.1:{port}/#/models/{name}/versions/{version}"
        in log
    )
    assert "/api/2.0/mlflow" not in log and "GET /" not in log, log  # no line per HTTP request


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_mlflow_ui_trials_link_shows_every_trial_in_a_browser(mlflow_ui: tuple[Launched, int]) -> None:
    """The printed trials link, rendered by a real headless browser, lists every trial's run; the printed model
    version link opens that version's page."""
    browser = _browser()
    if browser is None:
        reason = "no Chromium to render the MLflow UI (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server, _ = mlflow_ui
    server.url()
    link = re.search(r"^its trials, best cv_auc first [^:]*: (http://\S+)$", server.log.read_text(), re.M)
    assert link, server.log.read_text()
    dom = _render(browser, link.group(1))
    assert "Runs" in dom, dom[-2000:]
    for number in range(4):
        assert f"trial-{number:04d}" in dom, dom[-2000:]
    version = re.search(
        r"^version (\d+) \(this study's winner\): (http://\S+)$", server.log.read_text(), re.M
    )
    assert version, server.log.read_text()
    page = _render(browser, version.group(2))  # the version's page, with the description the registry gave it
    assert f"Version {version.group(1)}" in page and f"from study {STUDY}" in page, page[-2000:]


def _render(browser: str, url: str) -> str:
    """The DOM of `url` once a headless Chromium has run its scripts."""
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--window-size=1600,1000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout


@pytest.mark.slow
def test_optuna_and_mlflow_name_and_log_the_same_metrics(runs: Path) -> None:
    """Optuna's objective is cv_auc and its intermediate values are the mean_fold_auc curve MLflow logs, step for
    step; every key of a trial's run has strictly increasing steps and ends at the trial's last epoch."""
    from mlflow.tracking import MlflowClient

    study = load_dash_study(runs)
    assert study.metric_names == ["cv_auc"]
    client = MlflowClient(tracking_uri=default_tracking_uri(runs))
    for trial in study.get_trials():
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "mean_fold_auc")}
        assert curve == trial.intermediate_values and sorted(curve) == [1, 2]
        assert client.get_metric_history(run.info.run_id, "cv_auc")[-1].value == trial.value
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == sorted(set(steps)) and steps[-1] == 2, (trial.number, key, steps)
        assert "mean_fold_auc" in run.data.tags["mlflow.note.content"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}
