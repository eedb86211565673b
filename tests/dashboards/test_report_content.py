"""The report's winner, cohort and methods sections on one real tiny study, checked against the study's own files."""

from __future__ import annotations

import csv
import html
import importlib.metadata
import json
import re
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import ray

from dashboards.report import build_report
from search.commands.run import main as search_main
from search.study import StudyPaths, read_oof, resolve
from search.tune.tuning import startup_trials
from tests.search.conftest import load_study, search_args
from trainers.metrics import confusion, rates, threshold_metrics, youden_threshold
from trainers.metrics import youden_threshold as loop_youden

STUDY = "content"
BUDGET = 2


@pytest.fixture(scope="module")
def study(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StudyPaths, str]:
    """A finished 2-trial study (1 epoch, ASHA, 3 of 12 patients held out, not registered) and its report."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = tmp_path_factory.mktemp("content") / "runs"
    try:
        args = search_args(
            tiny_cohort,
            runs,
            STUDY,
            "--budget",
            str(BUDGET),
            "--max-epochs",
            "1",
            "--cpus-per-trial",
            "1",
            "--holdout",
            "0.25",
            "--force-small-holdout",
            "--no-register",
        )
        assert search_main(args) == 0
    finally:
        ray.shutdown()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    page = build_report(resolve(runs, STUDY)).read_text()
    return runs, StudyPaths(runs / STUDY), page


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _winner_oof(runs: Path, paths: StudyPaths) -> tuple[optuna.trial.FrozenTrial, np.ndarray, np.ndarray]:
    best = load_study(runs, STUDY).best_trial  # no winner.json: the report details the best complete trial
    rows = read_oof(paths.oof(best.number))
    assert rows
    return best, np.array([r["label"] for r in rows]), np.array([r["prob"] for r in rows])


def test_stats_agree_with_the_trainers_loop_versions() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    p = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.2, 60), 0, 1), 2)  # ties on purpose
    cut = youden_threshold(y, p)
    assert cut == loop_youden(y, p)
    for threshold in (0.5, cut):
        mine, ref = rates(confusion(y, p, threshold)), threshold_metrics(y, p, threshold)
        assert mine["sensitivity"] == pytest.approx(ref["recall"])
        assert mine["specificity"] == pytest.approx(ref["specificity"])
        assert mine["ppv"] == pytest.approx(ref["precision"])
        assert mine["accuracy"] == pytest.approx(ref["accuracy"])
        assert mine["f1"] == pytest.approx(ref["f1"])
    assert np.isnan(rates(confusion(np.array([0, 1]), np.array([0.1, 0.2]), 0.9))["ppv"])  # nobody called T2


@pytest.mark.slow
def test_winner_section_matches_its_out_of_fold_table(study: tuple[Path, StudyPaths, str]) -> None:
    runs, paths, page = study
    best, y, p = _winner_oof(runs, paths)
    out = paths.report
    claimed = re.search(
        r"cv_auc <b>([\d.]+)</b> \(95% CI ([\d.]+) to ([\d.]+), percentile bootstrap over its "
        r"(\d+) patients",
        page,
    )
    assert claimed, page
    value, low, high = (float(claimed.group(i)) for i in (1, 2, 3))
    assert value == round(best.value, 3) and low <= value <= high and int(claimed.group(4)) == len(y) == 9
    metrics = _csv(out / "winner_metrics.csv")
    assert [m["predictions"] for m in metrics] == [
        "out-of-fold",
        "out-of-fold",
    ]  # not registered: no held-out row
    for row, cut in zip(metrics, (0.5, loop_youden(y, p)), strict=True):
        assert float(row["threshold"]) == pytest.approx(cut, abs=5e-5)
        assert sum(int(row[k]) for k in ("TP", "FP", "FN", "TN")) == len(y)
        assert int(row["TP"]) + int(row["FN"]) == int(y.sum())
        ref = threshold_metrics(y, p, cut)
        assert float(row["sensitivity"]) == pytest.approx(ref["recall"], abs=5e-4)
        assert float(row["specificity"]) == pytest.approx(ref["specificity"], abs=5e-4)
        assert float(row["accuracy"]) == pytest.approx(ref["accuracy"], abs=5e-4)
    matrix = _csv(out / "winner_confusion.csv")
    assert sum(int(r["called T1"]) + int(r["called T2"]) for r in matrix) == 2 * len(y)
    assert [int(r["patients"]) for r in matrix if r["true stage"] == "T2"] == [int(y.sum())] * 2
    bins = _csv(out / "winner_calibration.csv")
    assert sum(int(b["patients"]) for b in bins) == len(y)
    assert f"Brier score {np.mean((p - y) ** 2):.3f}" in page
    for stem in ("winner_confusion", "winner_calibration"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.svg").read_text().startswith(
            "<?xml"
        )
        assert f'href="{stem}.svg"' in page
    for stem in ("winner_metrics", "winner_confusion", "winner_calibration"):
        assert (out / f"{stem}.tex").read_text().startswith(r"\begin{tabular}")


@pytest.mark.slow
def test_cohort_table_counts_every_patient_once(
    study: tuple[Path, StudyPaths, str], tiny_cohort: Path
) -> None:
    _, paths, page = study
    held = set(json.loads(paths.holdout.read_text())["patients"])
    manifest = _csv(tiny_cohort)
    rows = {r["site"]: r for r in _csv(paths.report / "cohort.csv")}
    total = rows.pop("all sites")
    assert (int(total["search all"]), int(total["held-out all"]), int(total["total"])) == (9, 3, 12)
    for part, mine in (
        ("held-out", [m for m in manifest if m["patient_id"] in held]),
        ("search", [m for m in manifest if m["patient_id"] not in held]),
    ):
        assert int(total[f"{part} T2"]) == sum(m["label"] == "T2" for m in mine)
        for site, row in rows.items():
            assert int(row[f"{part} all"]) == sum(m["site"] == site for m in mine)
    assert set(rows) == {m["site"] for m in manifest}
    assert "manifest (manifest.csv)" in page


@pytest.mark.slow
def test_methods_name_what_reproduces_the_study(study: tuple[Path, StudyPaths, str]) -> None:
    _, paths, page = study
    session = json.loads(paths.config.read_text())["sessions"][-1]
    assert session["search"] == {
        "budget": BUDGET,
        "sampler": "tpe",
        "study_first": True,
        "startup_trials": startup_trials(BUDGET),
        "scheduler": "asha",
        "grace_epochs": 1,
        "reduction_factor": 3.0,
        "max_epochs": 1,
    }
    text = html.unescape(re.search(r'<p class="methods">(.*?)</p>', page, re.S).group(1))
    for said in (
        "the tiny space",
        "lr 0.0001 to 0.003 (log-uniform)",
        "resolution one of 32, 48",
        "weight_decay fixed at 0.0001",
        f"for {BUDGET} trials",
        f"{startup_trials(BUDGET)} random start-up",
        "ASHA",
        "grace period 1",
        "reduction factor 3",
        "at most 1 epochs",
        "3-fold cross-validation",
        "grouped by patient",
        "seed 0",
        "3 patients (25% of the cohort, stratified by stage)",
        "Seed 0",
        "Preprocessing (version 2)",
        f"timm {importlib.metadata.version('timm')}",
        f"ray {importlib.metadata.version('ray')}",
    ):
        assert said.lower() in text.lower(), said
    table = {r["setting"]: r for r in _csv(paths.report / "methods.csv")}
    assert table["software: torch"]["value"] == importlib.metadata.version("torch")
    assert table["software: torch"]["source"] == "recorded by the search"
    assert table["cross-validation"]["value"].startswith("3 folds")
    assert "--budget" in page and "stagesearch run" in page


@pytest.mark.slow
def test_report_of_an_older_or_registered_study(study: tuple[Path, StudyPaths, str], tmp_path: Path) -> None:
    """A study whose sessions recorded no settings says so; a registered winner adds its held-out row."""
    runs, paths, _ = study
    copy = tmp_path / "runs" / STUDY
    shutil.copytree(paths.root, copy, ignore=shutil.ignore_patterns("report", "ray", "mlflow-artifacts"))
    config = json.loads((copy / "config.json").read_text())
    for session in config["sessions"]:
        del session["search"], session["software"]
    config["manifest_path"] = str(
        tmp_path / "moved.csv"
    )  # the manifest is gone: stages from the study folder
    (copy / "config.json").write_text(json.dumps(config))
    best, _, _ = _winner_oof(runs, paths)
    held = json.loads(paths.holdout.read_text())["patients"]
    predictions = [{"patient_id": pid, "label": i % 2, "prob": 0.2 + 0.3 * i} for i, pid in enumerate(held)]
    (copy / "winner.json").write_text(
        json.dumps(
            {
                "trial": best.number,
                "threshold": 0.45,
                "threshold_rule": "youden_oof (test)",
                "holdout": {
                    "auc": 0.5,
                    "ci_low": 0.0,
                    "ci_high": 1.0,
                    "n_patients": 3,
                    "predictions": predictions,
                },
            }
        )
    )
    page = build_report(resolve(tmp_path / "runs", STUDY)).read_text()
    assert "Sampler: not recorded" in page and "the study did not record it" in page
    row = _csv(copy / "report" / "winner_metrics.csv")[-1]
    assert row["predictions"] == "held-out (registered model)" and float(row["threshold"]) == 0.45
    assert [int(row[k]) for k in ("TP", "FP", "FN", "TN")] == [
        1,
        1,
        0,
        1,
    ]  # probs 0.2 (T1), 0.5 (T2), 0.8 (T1)
    assert "the registered winner (winner.json)" in page
    cohort = {r["site"]: r for r in _csv(copy / "report" / "cohort.csv")}
    assert list(cohort) == ["all sites"] and "sites unknown" in page and "is not there" in page
    assert (cohort["all sites"]["search all"], cohort["all sites"]["held-out all"]) == ("9", "3")
    assert cohort["all sites"]["held-out T2"] == "1"  # the labels of the registered winner's held-out table


def test_cohort_of_a_pseudonymised_study_matches_its_pseudonyms(tmp_path: Path) -> None:
    """The manifest names real ids, the study folder pseudonyms: the table must still count every patient."""
    from dashboards.report_cohort import cohort_section
    from search.study.pseudonyms import CHECK_KEY, pseudonym, salt_check, write_salt

    paths, salt = StudyPaths(tmp_path / "study"), "ab" * 16
    write_salt(paths, salt)
    manifest = tmp_path / "manifest.csv"
    ids = [f"P{i:03d}" for i in range(8)]
    manifest.write_text(
        "patient_id,image,label,site\n"
        + "".join(
            f"{p},img/{p}.png,{'T2' if i % 2 else 'T1'},{'north' if i < 5 else 'south'}\n"
            for i, p in enumerate(ids)
        )
    )
    fake = [pseudonym(salt, p) for p in ids]
    (paths.root / "config.json").write_text(
        json.dumps(
            {"settings": {"pseudonymise": True}, CHECK_KEY: salt_check(salt), "manifest_path": str(manifest)}
        )
    )
    (paths.root / "folds.json").write_text(
        json.dumps({"folds": [{"train": fake[2:6], "val": fake[:2]}, {"train": fake[:2], "val": fake[2:6]}]})
    )
    (paths.root / "holdout.json").write_text(json.dumps({"patients": fake[6:]}))
    page = cohort_section(paths, tmp_path / "report")
    rows = {r["site"]: r for r in _csv(tmp_path / "report" / "cohort.csv")}
    assert "manifest (manifest.csv)" in page
    assert [rows[s]["total"] for s in ("north", "south", "all sites")] == ["5", "3", "8"]
    assert (rows["south"]["search all"], rows["south"]["held-out T1"], rows["south"]["held-out T2"]) == (
        "1",
        "1",
        "1",
    )
