"""search/run.py end to end on the tiny phantom cohort, one local Ray session for the module."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient

from search.commands.run import main
from search.study import FORMAT_VERSION, LEADERBOARD_SCHEMA, StudyPaths, default_tracking_uri, read_oof
from tests.search.conftest import load_study, mlflow_runs, search_args
from trainers.backbones import family_of

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_budget_4_end_to_end(tiny_cohort, runs, capsys) -> None:
    args = search_args(
        tiny_cohort,
        runs,
        "e2e",
        "--budget",
        "4",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "2",
        "--cpus-per-trial",
        "1",
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("search space: tiny")
    assert "best trial per backbone family" in out and "winner: trial" in out
    assert f"stagesearch dashboard --runs-dir {runs.resolve()} --study e2e" in out
    assert "stagesearch mlflow-ui" in out and "stagesearch report" in out

    folder = runs / "e2e"
    for name in ("config.json", "folds.json", "optuna.db", "ray", "leaderboard.json"):
        assert (folder / name).exists(), name
    assert json.loads((folder / "config.json").read_text())["format"] == FORMAT_VERSION
    study = load_study(runs, "e2e")
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == COMPLETE for t in trials)
    for t in trials:
        assert sorted(t.intermediate_values) == [1, 2]
        assert 0.0 <= t.value <= 1.0
        assert {"accuracy", "precision", "recall", "f1", "mlflow_run_id"} <= set(t.user_attrs)

    parent, children = mlflow_runs(default_tracking_uri(runs), "e2e")
    assert len(children) == 4
    client = MlflowClient(tracking_uri=default_tracking_uri(runs))
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["state"] == "complete" and child.info.status == "FINISHED"
        assert {"cv_auc", "accuracy", "precision", "recall", "f1", "mean_fold_auc"} <= set(child.data.metrics)
        assert len(client.get_metric_history(child.info.run_id, "mean_fold_auc")) == 2
        assert (
            child.data.tags["backbone"] in ("tiny_cnn", "resnet10t")
            and child.data.tags["pretrained"] == "false"
        )
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"oof_predictions.csv", "roc_curve.png"} <= names
    numbers = sorted(int(c.data.tags["optuna_trial"]) for c in children)
    assert numbers == [0, 1, 2, 3]
    assert parent.info.status == "FINISHED" and "best_cv_auc" in parent.data.metrics
    board = json.loads((folder / "leaderboard.json").read_text())
    assert board["schema"] == LEADERBOARD_SCHEMA and board["counts"]["complete"] == 4 and board["rows"]
    best = board["rows"][0]
    assert best["trial"] == study.best_trial.number and best["oof"] == f"trials/{best['trial']}/oof.csv"
    assert best["family"] == family_of(best["backbone"]) and {"accuracy", "fold_auc_sd"} <= set(
        best["metrics"]
    )
    for t in trials:  # every trial wrote its out-of-fold table once per epoch; the file holds the last one
        rows = read_oof(StudyPaths(folder).oof(t.number))
        assert rows and {r["epoch"] for r in rows} == {2} and len(rows) == 12  # every patient once


def test_random_sampler(tiny_cohort, runs, monkeypatch) -> None:
    import search.tune.tuning

    made = []
    real = search.tune.tuning.make_sampler
    monkeypatch.setattr(search.tune.tuning, "make_sampler", lambda *a: made.append(real(*a)) or made[-1])
    args = search_args(
        tiny_cohort,
        runs,
        "rnd",
        "--budget",
        "2",
        "--sampler",
        "random",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "1",
    )
    assert main(args) == 0
    assert [type(s).__name__ for s in made] == ["RandomSampler"]  # what the searcher was given
    study = load_study(runs, "rnd")
    assert [t.state for t in study.get_trials()] == [COMPLETE, COMPLETE]
    parent, _ = mlflow_runs(default_tracking_uri(runs), "rnd")
    assert parent.data.params["sampler"] == "random"


def test_warm_start_queues_the_study_points_once(tiny_cohort, runs) -> None:
    """--warm-start: a new study's first trials are the space's study points; a resumed one does not queue them
    again (the sampler goes on)."""
    from spaces import get_space

    args = search_args(
        tiny_cohort,
        runs,
        "warm",
        "--warm-start",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "2",
        "--no-register",
    )
    points = get_space("tiny").study_points()
    assert len(points) == 2
    assert main([*args, "--budget", "2"]) == 0
    assert main([*args, "--budget", "3", "--resume"]) == 0
    trials = load_study(runs, "warm").get_trials()
    assert [t.state for t in trials] == [COMPLETE] * 3
    assert [t.params for t in trials[:2]] == points
    assert all(t.params != p for t in trials[2:] for p in points)  # sampled: TPE draws lr from a continuum
    sessions = json.loads((runs / "warm" / "config.json").read_text())["sessions"]
    assert [s["search"].get("study_first") for s in sessions] == [True, True]  # --warm-start: its alias


def test_asha_stops_trials_early(tiny_cohort, runs) -> None:
    args = search_args(
        tiny_cohort,
        runs,
        "asha",
        "--budget",
        "8",
        "--max-epochs",
        "4",
        "--grace-epochs",
        "1",
        "--reduction-factor",
        "2",
        "--max-concurrent",
        "1",
        "--cpus-per-trial",
        "2",
    )
    assert main(args) == 0
    trials = load_study(runs, "asha").get_trials()
    assert len(trials) == 8
    pruned = [t for t in trials if t.state == PRUNED]
    complete = [t for t in trials if t.state == COMPLETE]
    assert pruned, "ASHA stopped no trial early"
    assert complete
    client = MlflowClient(tracking_uri=default_tracking_uri(runs))
    for t in trials:  # intermediate values: the mean_fold_auc ASHA compared, as MLflow logged it
        history = client.get_metric_history(t.user_attrs["mlflow_run_id"], "mean_fold_auc")
        assert t.intermediate_values == {m.step: m.value for m in history}
    for t in pruned:  # Optuna's value of a pruned trial is its last intermediate value
        assert max(t.intermediate_values) < 4 and t.value == t.intermediate_values[max(t.intermediate_values)]
    for t in complete:  # ... of a complete one, its cv_auc at the last epoch
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
        assert t.value == client.get_metric_history(t.user_attrs["mlflow_run_id"], "cv_auc")[-1].value
    _, children = mlflow_runs(default_tracking_uri(runs), "asha")
    states = sorted(c.data.tags["state"] for c in children)
    assert states.count("pruned") == len(pruned) and states.count("complete") == len(complete)
    for child in children:  # the runs table shows which trials early stopping ended
        assert child.info.run_name.endswith("-pruned") == (child.data.tags["state"] == "pruned")


def test_a_format_1_folder_resumes_and_reports(tiny_cohort, runs) -> None:
    """A study folder made before the format version (no `format`, no trials/, leaderboard without schema)."""
    from dashboards.report import build_report, load_oof
    from search.study import resolve

    args = search_args(
        tiny_cohort,
        runs,
        "old",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "2",
        "--no-register",
    )
    assert main([*args, "--budget", "1", "--no-study-first"]) == 0
    folder = runs / "old"
    config = json.loads((folder / "config.json").read_text())
    del config["format"]
    (folder / "config.json").write_text(json.dumps(config))
    shutil.rmtree(folder / "trials")
    (folder / "leaderboard.json").write_text(json.dumps({"counts": {}, "rows": []}))

    assert main([*args, "--budget", "2", "--resume"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == FORMAT_VERSION and config["upgraded_from_format"] == 1
    assert len(config["sessions"]) == 2
    assert not StudyPaths(folder).oof(0).exists() and read_oof(StudyPaths(folder).oof(1))
    board = json.loads((folder / "leaderboard.json").read_text())
    assert board["schema"] == LEADERBOARD_SCHEMA and board["counts"]["complete"] == 2
    assert board["rows"] and all(
        r["family"] == family_of(r["backbone"]) for r in board["rows"]
    )  # from the registry
    old_trial, new_trial = load_study(runs, "old").get_trials()
    assert load_oof(old_trial, StudyPaths(folder))[1].startswith(
        "no oof.csv (trial from before study-folder format 2"
    )
    assert load_oof(new_trial, StudyPaths(folder))[1] == "trials/1/oof.csv"
    assert "<h1>Study old</h1>" in build_report(resolve(runs, "old")).read_text()


def test_tpe_start_up_is_sized_to_the_budget() -> None:
    """A small budget still reaches TPE's model-guided phase; a large one keeps Optuna's default start-up."""
    from search.tune.tuning import make_sampler, startup_trials

    assert [startup_trials(b) for b in (6, 20, 35, 200)] == [4, 4, 7, 10]
    assert make_sampler("tpe", 0, 20)._n_startup_trials == 4
