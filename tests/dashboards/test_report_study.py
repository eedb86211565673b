"""The report on the dashboards' shared real tiny study: out-of-fold tables, a self-contained page with every
figure, the hold-out section or the warning without one, and a headless-browser render."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import optuna
import pytest
from PIL import Image

from dashboards.report import build_report, load_oof, param_importances
from dashboards.report_figures import fold_aucs
from search.study import StudyPaths, default_storage_url, resolve
from search.tracking.figures import roc_points
from tests.dashboards.browser import CHECKS, Browser, find_chromium
from tests.dashboards.conftest import STUDY, load_dash_study, run_script


@pytest.mark.slow
def test_every_trial_wrote_its_out_of_fold_table_into_the_study_folder(runs: Path) -> None:
    study = load_dash_study(runs)
    paths = StudyPaths(runs / STUDY)
    for trial in study.get_trials():
        rows, source = load_oof(trial, paths)
        assert source == f"trials/{trial.number}/oof.csv" and rows
        assert {r["epoch"] for r in rows} == {
            2
        }  # the last epoch's table, written once per epoch over the last
        assert roc_points(rows)[2] == pytest.approx(trial.value, abs=1e-6)  # the table behind cv_auc
        aucs = fold_aucs(rows)  # the report's fold spread: the same folds the trainer averaged
        mean = sum(aucs) / len(aucs) if aucs else 0.5
        assert mean == pytest.approx(trial.user_attrs["fold_auc_mean"], abs=1e-6)
    missing = optuna.trial.create_trial(value=0.5, params={}, distributions={})
    assert load_oof(missing, paths) == (None, "no out-of-fold table in the study folder")


@pytest.mark.slow
def test_report_is_self_contained_and_complete(runs: Path) -> None:
    done = run_script("report.py", "--runs-dir", runs.name, cwd=runs.parent)  # a relative folder ...
    assert done.returncode == 0, done.stderr
    written, url = done.stdout.strip().splitlines()[-2:]  # ... and the page's absolute path and file:// URL
    page_path = runs.resolve() / STUDY / "report" / "report.html"
    assert written == f"report written: {page_path}" and url == f"open it in a browser: {page_path.as_uri()}"
    page = page_path.read_text()

    pngs = sorted(page_path.parent.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "roc.png",
        "history.png",
        "folds.png",
        "holdout_roc.png",
        "explain-inputs.png",
    }
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) >= 300
    assert page.count("data:image/png;base64,") == len(pngs)
    values, note = param_importances(
        load_dash_study(runs)
    )  # the page shows the figure exactly when there are values
    assert html.escape(note) in page and ("importance.png" in page) == (values is not None)

    study = load_dash_study(runs)
    for backbone in {t.params["backbone"] for t in study.get_trials()}:
        assert backbone in page
    assert f"{study.best_value:.3f}" in page
    winner = json.loads((runs / STUDY / "winner.json").read_text())
    held = winner["holdout"]
    assert f"Held-out AUC {held['auc']:.3f} (95% CI {held['ci_low']:.3f} to {held['ci_high']:.3f})" in page
    assert "<tr><td>4</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>" in page  # 4 complete, nothing else
    candidates = json.loads((runs / STUDY / "leaderboard.json").read_text())["candidates"]
    whole = candidates["selection"]
    assert "<h2>Candidates of every kind</h2>" in page
    assert (
        f"Whole selection (the kind chosen inside each resample too): <b>{whole['corrected_auc']:.3f}</b>"
        in page
    )
    for entry in candidates["kinds"].values():
        assert f"<td>{entry['corrected_auc']:.3f}</td>" in page
    if candidates.get("difference"):
        assert html.escape(candidates["difference"]["words"]) in page


@pytest.mark.slow
def test_report_without_holdout_says_cv_auc_is_optimistic(runs: Path, tmp_path: Path) -> None:
    other = tmp_path / "runs" / STUDY  # the same stores and trial tables, but no winner.json or holdout.json
    other.mkdir(parents=True)
    shutil.copy(runs / STUDY / "config.json", other / "config.json")
    shutil.copytree(runs / STUDY / "trials", other / "trials")
    page = build_report(resolve(tmp_path / "runs")).read_text()
    assert "optimistic" in page and "Held-out AUC" not in page
    assert "oof.csv" in page
    assert (other / "report" / "roc.png").exists()


def test_report_on_a_study_without_complete_trials(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "early"
    folder.mkdir(parents=True)
    storage = default_storage_url(StudyPaths(folder))
    study = optuna.create_study(study_name="early", storage=storage, direction="maximize")
    failed = study.ask({"backbone": optuna.distributions.CategoricalDistribution(["resnet10t"])})
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    (folder / "config.json").write_text(json.dumps({"study": "early", "storage": storage}))
    page = build_report(resolve(tmp_path / "runs")).read_text()
    assert "No complete trial yet" in page and "need at least 10 complete trials" in page
    assert "optimistic" in page and "resnet10t" in page
    assert "<tr><td>0</td><td>0</td><td>1</td><td>0</td><td>0</td></tr>" in page
    with Image.open(folder / "report" / "history.png") as image:
        assert image.format == "PNG"


def _chromium() -> str:
    """Chromium's path; outside CI the test skips with the reason when there is none, under CI it fails."""
    found = find_chromium()
    if found is None:
        reason = "no Chromium on PATH to render the report (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return found


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(runs: Path, tmp_path: Path) -> None:
    page = build_report(resolve(runs), tmp_path / "report")
    text = page.read_text()
    broken = page.with_name(
        "broken.html"
    )  # one image's data damaged, one empty section: the check must see both
    broken.write_text(text.replace("base64,", "base64,AAAA", 1).replace("</body>", "<h2>Empty</h2></body>"))
    with Browser(_chromium()) as browser:
        browser.open(page)
        seen = browser.evaluate(CHECKS)
        browser.open(broken)
        damaged = browser.evaluate(CHECKS)

    assert seen["title"] == f"stagesearch report: {STUDY}" and seen["h1"] == f"Study {STUDY}"
    assert seen["height"] > 2000  # laid out: the sections below each other, not an empty or failed page
    images = seen["images"]
    assert len(images) == text.count("<img ") >= 4  # ROC, history, folds, hold-out ROC at least
    assert [i["alt"] for i in images if not (i["complete"] and i["width"] >= 300 and i["shown"] > 0)] == []
    titles = [s["title"] for s in seen["sections"]]
    assert {"Trials", "Backbones", "Figures", "Held-out test", "What the model sees"} <= set(titles)
    seen_alts = {
        i["alt"] for i in images
    }  # the registered model's input slices (and its maps, unless radiomics)
    assert "explain-inputs" in seen_alts
    winner = json.loads((runs / STUDY / "winner.json").read_text())
    assert ("explain-saliency" in seen_alts) == (winner["kind"] != "radiomics")
    assert [
        s["title"] for s in seen["sections"] if not s["text"] and not s["images"]
    ] == []  # no section empty

    assert [i["width"] for i in damaged["images"]].count(0) == 1
    assert [s["title"] for s in damaged["sections"] if not s["text"] and not s["images"]] == ["Empty"]
