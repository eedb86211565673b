"""Sites in a search: a site-grouped hold-out of whole sites (or a refusal at parse time), the winner's
per-site results in leaderboard.json, MLflow, the summary and the report, and the site-shortcut check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from search.commands.run import main as run_main
from search.session.configure import configure
from search.session.options import build_parser
from search.stats.sites import CohortSites, metric_name, outcome_lines, site_metrics, site_shortcut
from search.study import Leaderboard, StudyPaths, default_tracking_uri, read_leaderboard
from search.study.inputs import prepare_inputs
from tests.search.conftest import mlflow_runs, search_args
from trainers.folds import load_or_make_folds


def test_site_metrics_per_site_and_one_class_has_no_auc() -> None:
    rng = np.random.default_rng(0)
    patients = [f"P{i:02d}" for i in range(30)]
    sites = {p: ("a" if i < 20 else "b") for i, p in enumerate(patients)}
    y = [int(i % 3 == 0) if i < 20 else 1 for i in range(30)]  # site b: T2 only
    prob = rng.random(30)
    out = site_metrics(patients, y, prob, sites)
    assert out["a"] == {"auc": round(roc_auc_score(y[:20], prob[:20]), 4), "n": 20, "prevalence": 0.35}
    assert out["b"] == {"auc": None, "n": 10, "prevalence": 1.0}
    assert site_metrics(patients, y, prob, {}) == {}


def _shortcut_study(tmp_path: Path, confounded: bool) -> tuple[StudyPaths, CohortSites]:
    """120 patients at 4 sites; confounded: the sites' prevalences are 10%, 30%, 70%, 90%; else 50% each."""
    rng = np.random.default_rng(1)
    sites, labels = {}, {}
    for i in range(120):
        site = i % 4
        p = (0.1, 0.3, 0.7, 0.9)[site] if confounded else 0.5
        sites[f"P{i:03d}"], labels[f"P{i:03d}"] = f"site {site}", int(rng.random() < p)
    paths = StudyPaths(tmp_path / ("confounded" if confounded else "mixed"))
    load_or_make_folds(paths.folds, labels, None, 5, 0, "h")
    return paths, CohortSites(sites, labels)


def test_site_shortcut_found_when_site_and_label_are_confounded(tmp_path: Path) -> None:
    short = site_shortcut(*_shortcut_study(tmp_path, confounded=True))
    assert short is not None and short["cv_auc"] > 0.75, short
    assert short["n_patients"] == 120 and short["n_sites"] == 4 and short["folds"] == 5
    lines = outcome_lines(Leaderboard("s", {}, [], site_shortcut=short))
    assert (
        len(lines) == 1
        and "the model may learn the site, not the tumour; consider --cv-group site" in lines[0]
    )


def test_site_shortcut_near_chance_when_not_confounded(tmp_path: Path) -> None:
    short = site_shortcut(*_shortcut_study(tmp_path, confounded=False))
    assert short is not None and short["cv_auc"] < 0.6, short
    assert (
        "no sign that the site alone gives the stage away"
        in outcome_lines(Leaderboard("s", {}, [], site_shortcut=short))[0]
    )


def test_site_shortcut_needs_two_sites(tmp_path: Path) -> None:
    paths, known = _shortcut_study(tmp_path, confounded=True)
    assert site_shortcut(paths, CohortSites({p: "one" for p in known.sites}, known.labels)) is None


def test_metric_names_are_sanitised() -> None:
    assert metric_name("St. Mary's (Leeds)/MR 2") == "St._Mary_s__Leeds__MR_2"


def test_site_holdout_refused_at_parse_time(tiny_cohort: Path, tmp_path: Path, capsys) -> None:
    # the tiny cohort's T1 patients are all at siteA: no whole site can be held out with both classes on both sides
    runs = tmp_path / "runs"
    args = search_args(
        tiny_cohort, runs, "refused", "--cv-group", "site", "--folds", "2", "--holdout", "0.25"
    )
    assert run_main(args) == 2
    err = capsys.readouterr().err
    assert "--holdout 0.25 with --cv-group site: no choice of whole sites leaves both classes" in err
    assert "siteA (T1 5, T2 1)" in err and not runs.exists()
    args = search_args(
        tiny_cohort, runs, "refused", "--cv-group", "site", "--folds", "3", "--holdout", "0.25"
    )
    assert run_main(args) == 2  # 3 sites cannot leave 3 for 3 folds after holding one out
    assert (
        "needs at least 4 sites (one to hold out, 3 left to search on), but the cohort has 3"
        in capsys.readouterr().err
    )


@pytest.fixture(scope="module")
def site_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 phantom patients at 3 sites, each with both classes (siteA T1 4/T2 5, siteB 7/3, siteC 3/2)."""
    from trainers.phantom import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("sites"), patients=24, seed=1, matrix=48).manifest


def test_prepared_study_holds_out_whole_sites(site_cohort: Path, tmp_path: Path) -> None:
    import csv

    runs = tmp_path / "runs"
    argv = search_args(
        site_cohort,
        runs,
        "bysite",
        "--cv-group",
        "site",
        "--folds",
        "2",
        "--holdout",
        "0.2",
        "--force-small-holdout",
        "--pseudonymise",
    )
    config, paths, cohort = configure(build_parser().parse_args(argv), argv)
    inputs = prepare_inputs(config, paths, cohort)
    stored = json.loads(paths.holdout.read_text())
    with open(site_cohort) as fh:
        real_site = {r["patient_id"]: r["site"] for r in csv.DictReader(fh)}
    site_of = {s.patient_id: s.site for s in inputs.cohort.scans}  # pseudonyms -> site
    assert set(site_of) != set(real_site)  # pseudonymised: the hold-out and folds name pseudonyms
    held_sites = {site_of[p] for p in stored["patients"]}
    search_sites = {site_of[p] for f in inputs.prepared.folds for p in f["train"] + f["val"]}
    assert stored["sites"] == sorted(held_sites) and stored["meta"]["group_by"] == "site"
    assert held_sites and search_sites and not held_sites & search_sites
    assert inputs.holdout == stored["patients"] == sorted(p for p, s in site_of.items() if s in held_sites)
    assert len(search_sites) >= 2  # enough sites left for the 2 site-grouped folds


def test_patient_level_holdout_of_an_earlier_version_is_refused(
    site_cohort: Path, tmp_path: Path, capsys
) -> None:
    from trainers.folds import load_or_make_holdout
    from trainers.manifest import load_manifest

    runs = tmp_path / "runs"
    argv = search_args(
        site_cohort,
        runs,
        "old",
        "--cv-group",
        "site",
        "--folds",
        "2",
        "--holdout",
        "0.2",
        "--force-small-holdout",
    )
    cohort = load_manifest(site_cohort, folds=2, cv_group="site")
    load_or_make_holdout(
        runs / "old" / "holdout.json", cohort.patient_labels(), 0.2, 0, cohort.content_hash()
    )
    assert run_main(argv) == 2  # a hold-out drawn patient by patient is not reused as if it held out sites
    assert "holdout.json was made with" in capsys.readouterr().err


@pytest.fixture(scope="module")
def search(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny search without --cv-group site, with a hold-out, that registers its winner: (runs, console)."""
    import contextlib
    import io

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = tmp_path_factory.mktemp("sitesearch") / "runs"
    args = search_args(
        tiny_cohort,
        runs,
        "sites",
        "--budget",
        "1",
        "--no-study-first",
        "--holdout",
        "0.25",
        "--force-small-holdout",
        "--scheduler",
        "fifo",
        "--max-epochs",
        "1",
        "--cpus-per-trial",
        "1",
    )
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert run_main(args) == 0
    finally:
        ray.shutdown()
    return runs, out.getvalue()


@pytest.mark.slow
def test_search_reports_sites_everywhere(search: tuple[Path, str]) -> None:
    from dashboards.report import main as report_main

    runs, console = search
    paths = StudyPaths(runs / "sites")
    board = read_leaderboard(paths)
    winner = json.loads(paths.winner.read_text())
    assert board is not None and board.per_site is not None
    oof_sites = board.per_site["oof"]
    assert sum(m["n"] for m in oof_sites.values()) == 9  # the 9 search patients (3 held out)
    assert set(board.per_site["holdout"]) <= {"siteA", "siteB", "siteC"}
    assert board.per_site["holdout"] == winner["holdout"]["per_site"]
    assert sum(m["n"] for m in board.per_site["holdout"].values()) == 3
    short = board.site_shortcut
    assert short is not None and short["n_patients"] == 9 and short["cv_auc"] is not None
    assert "winner per site (out-of-fold): siteA AUC" in console
    assert "winner per site (held-out):" in console
    assert f"site alone predicts the stage with CV AUC {short['cv_auc']:.2f}" in console
    parent, _ = mlflow_runs(default_tracking_uri(runs), "sites")
    metrics = parent.data.metrics
    for site, m in oof_sites.items():
        assert metrics[f"site_{site}_n"] == m["n"]
        assert (f"site_{site}_auc" in metrics) == (m["auc"] is not None)
    assert {k for k in metrics if k.startswith("holdout_site_") and k.endswith("_n")}
    assert metrics["site_shortcut_cv_auc"] == pytest.approx(short["cv_auc"])
    assert report_main(["--runs-dir", str(runs), "--study", "sites"]) == 0
    page = (paths.root / "report" / "report.html").read_text()
    assert "<h2>Sites</h2>" in page and "The site alone predicts the stage with CV AUC" in page
    assert MlflowClient(default_tracking_uri(runs)).get_run(parent.info.run_id).info.status == "FINISHED"
