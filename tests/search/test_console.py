"""What reaches the terminal: our own lines only (the libraries' logging goes to the study's log file), failures
and validation errors with their reason, plain lines off a terminal, and the live table on one.

One real search for the module, run as a user would (a fresh process in a fresh folder, its own local Ray with
2 CPUs, output to pipes), with one trial made to fail.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from search.commands.run import main
from search.console.routing import ConsoleSession, log_file
from search.study.results import TrialEpoch
from search.tune.driver import FAULTS_ENV
from search.tune.progress import LEGEND, Progress
from tests.search.conftest import ROOT, search_args

#: What the libraries print when nothing routes them (seen on a plain run before this module existed).
THIRD_PARTY = re.compile(
    r"^\d{4}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d|INFO|UserWarning|Warning:|Started a local Ray|Wrote the latest version|"
    r"Creating initial MLflow|Validating input example|Downloading artifacts|Successfully registered|"
    r"Created version|Tuner\.restore|^Trial \S+ (completed|errored)|^Result for|\x1b\["
)


@pytest.fixture(scope="module")
def search(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`stagesearch run` in a fresh folder: 2 trials of 1 epoch, trial 1 made to fail; registers the winner."""
    cwd = tmp_path_factory.mktemp("fresh")
    args = search_args(
        tiny_cohort,
        Path("runs"),
        "quiet",
        "--budget",
        "2",
        "--max-epochs",
        "1",
        "--scheduler",
        "fifo",
        "--num-cpus",
        "2",
        "--pretrained",
    )
    env = {**os.environ, FAULTS_ENV: json.dumps({"1": {"kind": "exception"}}), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "stagesearch", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")  # for the record (pytest -s)
    assert done.returncode == 0
    log = log_file(cwd / "runs" / "quiet").read_text()
    return SimpleNamespace(out=done.stdout.splitlines(), err=done.stderr.splitlines(), log=log)


def test_a_fresh_search_prints_only_our_lines(search: SimpleNamespace) -> None:
    ours = [line for line in search.err if line.startswith("preprocessing scans: ")]
    assert len(search.err) == len(ours), search.err  # stderr: nothing from Ray, MLflow or warnings
    assert not [line for line in search.out if THIRD_PARTY.search(line)]
    # ... because it went to the log file: Ray's, MLflow's and the warnings module's records, and our lines
    for said in (
        "INFO mlflow.store.db.utils: Creating initial MLflow database tables",
        "Started a local Ray instance",
        "Validating input example",
        "WARNING py.warnings:",
        "stagesearch.stdout: trial 1 failed (exception)",
    ):
        assert said in search.log, said
    assert (
        sum(line.startswith("log: ") and line.endswith("--verbose shows it here too)") for line in search.out)
        == 1
    )


def test_our_lines_once_each(search: SimpleNamespace) -> None:
    out = "\n".join(search.out)
    assert out.count(LEGEND) == 1
    assert out.count("no held-out patients") == 1 and out.count("optimistic") == 1
    assert out.count("could not show that") <= 1 and out.count("promote: ") == 1
    assert len([line for line in search.out if line.startswith("registered: models:/cervical-staging/")]) == 1


def test_plain_lines_off_a_terminal(search: SimpleNamespace) -> None:
    """Each finished trial and the status line after it, in the two metrics' names; a failure with its reason."""
    assert any(
        re.fullmatch(r"trial 0 complete: cv_auc 0\.\d{3} after 1 epoch \(.+ px, lr .+, aug .+\)", line)
        for line in search.out
    )
    assert "trial 1 failed (exception): RuntimeError: fault injected by a test at step 1" in search.out
    status = [line for line in search.out if line.startswith("[")]
    assert status[-1].startswith(
        "[   2/2] complete 1 pruned 0 failed 1 (exception 1) running 0 | best cv_auc 0."
    )
    assert "mean fold AUC" not in "\n".join(search.out)


def test_validation_errors_reach_the_terminal_even_quiet(tiny_cohort: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(search_args(tiny_cohort, runs, "bad", "--folds", "1", "--quiet")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--folds" in err
    assert not runs.exists()  # nothing written, not even the log


def test_quiet_keeps_warnings_errors_failures_and_the_summary(tmp_path: Path, capsys) -> None:
    with ConsoleSession("quiet") as session:
        print("study x: 0 of 3 trials finished")
        session.attach(tmp_path / "logs" / "search.log")
        logging.getLogger("mlflow.store").info("Creating initial MLflow database tables...")
        logging.getLogger("alembic.runtime").error("the database is locked\ntraceback ...")
        warnings.warn("weights missing", UserWarning, stacklevel=1)
        p = Progress(3, {}, None)  # what --quiet gives it: plain lines, which the console filters
        p.start()
        trial = SimpleNamespace(config={"_optuna_trial": 4, "backbone": "resnet50", "resolution": 64})
        p.trial_finished(trial, "failed", None, "Traceback ...\nValueError: NaN loss", "nan_loss")
        p.trial_finished(SimpleNamespace(config={"_optuna_trial": 5}), "pruned", None)
        print("warning: a hold-out of 4 patients")
        session.open_summary()
        print("winner: trial 2")
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "trial 4 failed (nan_loss): ValueError: NaN loss",
        "warning: a hold-out of 4 patients",
        "winner: trial 2",
    ]
    assert err.splitlines() == [
        f"error: alembic.runtime: the database is locked (the full record is in "
        f"{tmp_path / 'logs' / 'search.log'})"
    ]
    log = (tmp_path / "logs" / "search.log").read_text()
    assert "stagesearch.stdout: study x: 0 of 3 trials finished" in log  # held until the file was named
    assert "Creating initial MLflow database tables" in log and "UserWarning: weights missing" in log
    assert "traceback ..." in log and LEGEND in log


def test_a_crash_reaches_the_terminal_and_the_log(tmp_path: Path, capsys) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ConsoleSession() as session:
            session.attach(tmp_path / "search.log")
            raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert f"error: crashed with RuntimeError: boom; the log of this run: {tmp_path / 'search.log'}" in err
    assert "Traceback" in (tmp_path / "search.log").read_text()
    assert not isinstance(sys.stdout, type(session.stdout))  # streams restored


def test_live_table_on_a_terminal(tmp_path: Path, capsys) -> None:
    screen = io.StringIO()
    fake = Console(file=screen, force_terminal=True, width=160, color_system=None)
    trial = SimpleNamespace(
        config={
            "_optuna_trial": 3,
            "backbone": "resnet10t",
            "resolution": 48,
            "lr": 1e-3,
            "aug_strength": 0.5,
        }
    )
    with ConsoleSession() as session:
        session.attach(tmp_path / "search.log")
        p = Progress(5, {}, None, max_epochs=4, view="table", console=fake)
        p.on_trial_start(0, [], trial)
        p.start()
        p.on_trial_result(0, [], trial, {"epoch": 2, "mean_fold_auc": 0.71})
        pickle.dumps(p)  # Tune pickles its callbacks: the live table is left out
        p._live.refresh()
        drawn = screen.getvalue()
        final = TrialEpoch(
            epoch=4,
            final=True,
            cv_auc=0.8,
            mean_fold_auc=0.7,
            fold_auc_sd=0.1,
            train_loss=0.5,
            metrics={},
            pretrained=False,
            pretrained_note="",
        )
        p.trial_finished(trial, "complete", final)
        p.close()
    header = next(line for line in drawn.splitlines() if "mean_fold_auc" in line)
    assert re.search(r"trial\s+backbone\s+px\s+lr\s+aug\s+epoch\s+mean_fold_auc\s+running for", header)
    assert re.search(r"3\s+resnet10t\s+48\s+1\.0e-03\s+0\.50\s+2/4\s+0\.710\s+0m0\ds", drawn)
    assert "[   0/5] complete 0 pruned 0 failed 0 running 1 | best cv_auc -" in drawn
    assert "\x1b[" in drawn  # redrawn in place (cursor movement), not appended
    after = screen.getvalue()[len(drawn) :]
    assert "trial 3 complete: cv_auc 0.800 after 4 epochs (resnet10t, 48 px, lr 1.0e-03, aug 0.50)" in after
    # the legend before the table; once the table is gone, the status line once in its place
    legend, status = capsys.readouterr().out.splitlines()
    assert legend == LEGEND and status.startswith(
        "[   1/5] complete 1 pruned 0 failed 0 running 0 | best cv_auc 0.800"
    )
    log = (tmp_path / "search.log").read_text()
    assert (
        LEGEND in log
        and "trial 3 complete: cv_auc 0.800" in log
        and "mean_fold_auc" not in log.split(LEGEND)[1]
    )
