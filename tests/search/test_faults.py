"""Trials that fail alone: each fault injected into a real tiny search ends that trial only (Optuna FAIL with
the reason, MLflow child FAILED with the error), the search goes on, the summary counts failures by reason;
out of memory is retried once at half the batch size and the refit uses it; failures that point at the setup
stop the search. One local Ray session for the module."""

from __future__ import annotations

import contextlib
import io
import json

import optuna
import pytest
import ray

from search.commands.run import main
from search.study import CONFIG_ATTR, default_tracking_uri, read_failure, resolve, trial_config
from search.tune.driver import FAULTS_ENV
from search.tune.failures import stop_message
from tests.search.conftest import load_study, mlflow_runs, search_args

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL

# By Optuna trial number; trials run one at a time, so they finish in this order. The tiny space trains with
# batch 16: trial 0 runs out of memory at 16 only, trial 2 at every batch size.
FAULTS = {
    "0": {"kind": "out_of_memory", "above_batch": 8},
    "1": {"kind": "nan_loss", "step": 2},
    "2": {"kind": "out_of_memory"},
    "4": {"kind": "unreadable_data"},
    "5": {"kind": "exception", "step": 1},
}
REASONS = {1: "nan_loss", 2: "out_of_memory", 4: "unreadable_data", 5: "exception"}
ERRORS = {
    1: "NonFiniteLossError: training loss is nan at fold 0, epoch 1, step 2",
    2: "out of memory at batch size 16, and again after retrying with 8",
    4: "UnreadableDataError: cached ROI arrays with non-finite values for patient(s)",
    5: "RuntimeError: fault injected by a test at step 1",
}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def faulty(tiny_cohort, tmp_path_factory):
    """One search of 6 trials, 4 of them failing, each for another reason; (runs folder, exit code, output)."""
    runs = tmp_path_factory.mktemp("faults") / "runs"
    args = search_args(
        tiny_cohort,
        runs,
        "faults",
        "--budget",
        "6",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--max-concurrent",
        "1",
        "--cpus-per-trial",
        "2",
        "--no-register",
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv(FAULTS_ENV, json.dumps(FAULTS))
        code = main(args)
    return runs, code, out.getvalue(), err.getvalue()


def test_each_failure_ends_its_trial_only(faulty) -> None:
    runs, code, out, _ = faulty
    assert code == 0
    trials = load_study(runs, "faults").get_trials()
    assert [t.state for t in trials] == [COMPLETE, FAIL, FAIL, COMPLETE, FAIL, FAIL]  # the search went on
    for number, reason in REASONS.items():
        t = trials[number]
        assert t.user_attrs["fail_reason"] == reason
        assert ERRORS[number] in t.user_attrs["error"], t.user_attrs["error"]
        assert f"trial {number} failed ({reason}): " in out
    assert "fail_reason" not in trials[0].user_attrs and "fail_reason" not in trials[3].user_attrs
    assert read_failure(resolve(runs, "faults").paths, 2)["batch_size"] == 8  # the batch size it tried last

    uri = default_tracking_uri(runs)
    parent, children = mlflow_runs(uri, "faults")
    by_number = {int(c.data.tags["optuna_trial"]): c for c in children}
    assert sorted(by_number) == [0, 1, 2, 3, 4, 5]
    for number, child in by_number.items():
        if number in REASONS:
            assert child.info.status == "FAILED" and child.data.tags["state"] == "failed"
            assert child.data.tags["fail_reason"] == REASONS[number]
            assert ERRORS[number] in child.data.tags["error"] and "Traceback" in child.data.tags["traceback"]
        else:
            assert child.info.status == "FINISHED" and child.data.tags["state"] == "complete"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_failed_nan_loss"] == 1 and parent.data.metrics["trials_failed"] == 4


def test_the_summary_counts_failures_by_reason(faulty) -> None:
    runs, _, out, _ = faulty
    assert (
        "study faults: 2 complete, 0 pruned (stopped early), 4 failed "
        "(exception 1, nan_loss 1, out_of_memory 1, unreadable_data 1)"
    ) in out
    assert "failed 4 (exception 1, nan_loss 1, out_of_memory 1, unreadable_data 1)" in out  # the status line
    board = json.loads((runs / "faults" / "leaderboard.json").read_text())
    assert board["counts"]["failed"] == 4
    assert board["failures"] == {"exception": 1, "nan_loss": 1, "out_of_memory": 1, "unreadable_data": 1}
    assert sorted(r["trial"] for r in board["rows"]) in ([0], [3], [0, 3])
    from dashboards.report import build_report

    page = build_report(resolve(runs, "faults")).read_text()
    assert "Failed trials by reason: exception 1, nan_loss 1, out_of_memory 1, unreadable_data 1." in page


def test_out_of_memory_retried_at_half_batch_and_the_refit_uses_it(faulty) -> None:
    from search.models.refit import refit as _refit

    runs, _, _, _ = faulty
    study = load_study(runs, "faults")
    retried, plain = study.trials[0], study.trials[3]
    assert retried.user_attrs[CONFIG_ATTR]["batch_size"] == 16  # what the space sampled
    assert retried.user_attrs["batch_size"] == 8 and trial_config(retried)["batch_size"] == 8
    assert plain.user_attrs["batch_size"] == 16 and trial_config(plain)["batch_size"] == 16
    _, children = mlflow_runs(default_tracking_uri(runs), "faults")
    child = next(c for c in children if c.data.tags["optuna_trial"] == "0")
    assert child.data.tags["batch_size_used"] == "8" and "ran out of memory" in child.data.tags["oom_retry"]
    refit = _refit(resolve(runs, "faults"), 0, log=lambda line: None)
    assert refit.cfg.batch_size == 8 and refit.result.config["batch_size"] == 8
    assert refit.result.cv_auc == pytest.approx(retried.value, abs=1e-6)  # the models the trial scored


def test_failures_that_point_at_the_setup_stop_the_search(tiny_cohort, runs, monkeypatch, capsys) -> None:
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"*": {"kind": "exception"}}))
    args = search_args(
        tiny_cohort,
        runs,
        "stop",
        "--budget",
        "10",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--max-concurrent",
        "1",
        "--cpus-per-trial",
        "2",
    )
    assert main(args) == 1
    err = capsys.readouterr().err
    assert (
        "error: search stopped: the first 3 trials all failed (exception 3); last error: RuntimeError: fault"
        in err
    )
    assert "--study stop --resume" in err
    trials = load_study(runs, "stop").get_trials()
    assert [t.state for t in trials] == [FAIL, FAIL, FAIL]  # 7 of the budget of 10 not spent
    parent, children = mlflow_runs(default_tracking_uri(runs), "stop")
    assert parent.info.status == "FAILED" and "first 3 trials all failed" in parent.data.tags["stopped"]
    assert [c.info.status for c in children] == ["FAILED"] * 3
    assert not (runs / "stop" / "winner.json").exists()


def test_the_stop_rule() -> None:
    assert stop_message(["nan_loss", "nan_loss"]) is None  # fewer than 3 finished
    assert "the first 3 trials all failed (nan_loss 2, out_of_memory 1)" in stop_message(
        ["nan_loss", "out_of_memory", "nan_loss"]
    )
    assert stop_message([None, "a", "b", "c", "d"]) is None
    assert stop_message(["a", "b", None, "a", "a", "a", "a", None]) is None
    message = stop_message([None, "a", "b", "a", "a", "b", None], last_error="E: boom", study="s1")
    assert "5 trials in a row failed (a 3, b 2); last error: E: boom" in message
    assert "`stagesearch run --study s1 --resume`" in message
