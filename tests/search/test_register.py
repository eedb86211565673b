"""Search with a held-out split -> registered ensemble -> champion -> predictions from the registry."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray
from mlflow.tracking import MlflowClient

from search.cli import main as run_main
from search.predict import main as predict_main
from search.promote import main as promote_main
from search.register import main as register_main
from search.study import default_tracking_uri
from tests.search.conftest import ROOT, search_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tiny_cohort, tmp_path_factory):
    """One tiny search with --holdout 0.25 that registers its winner at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = tmp_path_factory.mktemp("reg") / "runs"
    args = search_args(tiny_cohort, runs, "reg", "--budget", "2", "--holdout", "0.25", "--force-small-holdout", "--scheduler", "fifo",
                       "--max-epochs", "2", "--cpus-per-trial", "1")  # fmt: skip
    try:
        assert run_main(args) == 0
    finally:
        ray.shutdown()
    return runs


def _manifest_rows(tiny_cohort) -> list[dict]:
    with open(tiny_cohort) as fh:
        return list(csv.DictReader(fh))


def test_holdout_never_seen_and_reported(study, tiny_cohort) -> None:
    folder = study / "reg"
    held = json.loads((folder / "holdout.json").read_text())["patients"]
    assert len(held) == 3
    folds = json.loads((folder / "folds.json").read_text())["folds"]
    in_folds = {p for f in folds for p in f["train"] + f["val"]}
    assert not in_folds & set(held)
    assert in_folds | set(held) == {r["patient_id"] for r in _manifest_rows(tiny_cohort)}
    winner = json.loads((folder / "winner.json").read_text())
    h = winner["holdout"]
    assert h["n_patients"] == 3 and sorted(p["patient_id"] for p in h["predictions"]) == held
    assert h["ci_low"] <= h["auc"] <= h["ci_high"] or np.isnan(h["auc"])
    assert winner["refit_cv_auc"] == pytest.approx(winner["cv_auc"], abs=1e-6)  # same seeds, same models


def test_registered_version_tags(study) -> None:
    client = MlflowClient(default_tracking_uri(study))
    versions = client.search_model_versions("name='cervical-staging'")
    assert len(versions) == 1
    tags = versions[0].tags
    for key in ("study", "trial", "backbone", "cv_auc", "holdout_auc", "holdout_auc_ci_low",
                "holdout_auc_ci_high", "cohort_hash", "pretrained", "beats_chance", "estimate", "threshold",
                "threshold_rule"):  # fmt: skip
        assert key in tags, key
    assert tags["study"] == "reg" and tags["pretrained"] == "false" and tags["estimate"] == "holdout"
    config = json.loads((study / "reg" / "config.json").read_text())
    assert tags["cohort_hash"] == config["cohort_hash"]
    # the search's corrected estimate (leaderboard.json) and the 3-patient hold-out's CI both have to say so
    board = json.loads((study / "reg" / "leaderboard.json").read_text())
    assert tags["corrected_auc"] == f"{board['corrected_auc']:.4f}"
    shown = board["corrected"]["beats_chance"] and float(tags["holdout_auc_ci_low"]) > 0.5
    assert tags["beats_chance"] == ("true" if shown else "false")
    winner = json.loads((study / "reg" / "winner.json").read_text())
    assert float(tags["threshold"]) == pytest.approx(winner["threshold"], abs=1e-5)
    aliases = client.get_registered_model("cervical-staging").aliases
    assert {k: int(v) for k, v in aliases.items()} == {"challenger": int(versions[0].version)}
    mlflow.set_tracking_uri(default_tracking_uri(study))
    info = mlflow.models.get_model_info(f"models:/cervical-staging/{versions[0].version}")
    assert info.signature is not None and info.saved_input_example_info is not None


def promote_best_as_hinted(runs, hint: str, capsys) -> int:
    """Run `promote --best` and check it does what `hint` (printed by register or --list) said; its exit code."""
    code = promote_main(["--runs-dir", str(runs), "--best"])
    out = capsys.readouterr()
    if "already @champion" in hint:
        assert code == 0 and "already holds @champion" in out.out, (hint, out)
    elif "(promote it with --best)" in hint:
        assert code == 0 and "@champion -> cervical-staging" in out.out, (hint, out)
    else:
        assert "--best would refuse it: " in hint and code == 2 and "pass --force" in out.err, (hint, out)
    return code


def test_promote_predict_round_trip(study, tiny_cohort, tmp_path, capsys) -> None:
    winner = json.loads((study / "reg" / "winner.json").read_text())
    if promote_best_as_hinted(study, winner["next"], capsys) == 2:  # the hold-out CI of 3 patients includes 0.5
        assert winner["beats_chance"] == "false"
        assert promote_main(["--runs-dir", str(study), "--best", "--force"]) == 0
    mlflow.set_tracking_uri(default_tracking_uri(study))
    model = mlflow.pyfunc.load_model("models:/cervical-staging@champion")
    threshold = model.unwrap_python_model().threshold
    assert threshold == pytest.approx(winner["threshold"]) and winner["threshold_rule"]
    winner = json.loads((study / "reg" / "winner.json").read_text())
    expected = {p["patient_id"]: p["prob"] for p in winner["holdout"]["predictions"]}
    base = tiny_cohort.parent
    rows = [r for r in _manifest_rows(tiny_cohort) if r["patient_id"] in expected]
    table = pd.DataFrame({"patient_id": [r["patient_id"] for r in rows],
                          "image": [str(base / r["image"]) for r in rows],
                          "mask": [str(base / r["mask"]) for r in rows]})  # fmt: skip
    out = model.predict(table)
    for pid, p in zip(out["patient_id"], out["p_t2"], strict=True):
        assert p == pytest.approx(expected[pid], abs=1e-5)  # registry == trainer's own prediction
    assert set(out["stage"]) <= {"T1", "T2"}
    assert list(out["stage"]) == ["T2" if p >= threshold else "T1" for p in out["p_t2"]]  # the recorded threshold

    r = rows[0]
    code = predict_main(["--runs-dir", str(study), "--image", str(base / r["image"]), "--mask",
                         str(base / r["mask"]), "--patient-id", r["patient_id"]])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{expected[r['patient_id']]:.3f}" in printed
    assert f"stage T2 when P(T2) >= {threshold:.3f} (the operating threshold recorded at registration)" in printed

    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("patient_id,image,mask\n" + "".join(
        f"{r['patient_id']},{base / r['image']},{base / r['mask']}\n" for r in rows))  # fmt: skip
    preds = tmp_path / "preds.csv"
    assert predict_main(["--runs-dir", str(study), "--manifest", str(unlabelled), "--out", str(preds)]) == 0
    written = pd.read_csv(preds)
    assert len(written) == len(rows) and {"patient_id", "p_t2", "stage"} <= set(written.columns)


def test_model_carries_no_patient_ids(study, tiny_cohort, tmp_path) -> None:
    mlflow.set_tracking_uri(default_tracking_uri(study))
    local = mlflow.artifacts.download_artifacts("models:/cervical-staging/1", dst_path=str(tmp_path))
    ids = [r["patient_id"].encode() for r in _manifest_rows(tiny_cohort)]
    for path in __import__("pathlib").Path(local).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [i for i in ids if i in data], path


def test_predict_bad_input_exit_2(study, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search" / "predict.py"), "--runs-dir", str(study), "--image",
         str(tmp_path / "missing.nii.gz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "missing.nii.gz" in proc.stderr


def test_chance_level_winner_is_registered_but_not_promoted(study, capsys) -> None:
    """The corrected interval includes 0.5 (written into leaderboard.json as the BBC-CV part does): the winner is
    registered again, tagged beats_chance=false, gets @challenger, and promote refuses it without --force."""
    board = json.loads((study / "reg" / "leaderboard.json").read_text())
    board.update(corrected_auc=0.52, corrected_auc_ci=[0.38, 0.66],
                 corrected={"n_resamples": 1000, "unit": "patient", "beats_chance": False})  # fmt: skip
    (study / "reg" / "leaderboard.json").write_text(json.dumps(board))
    assert register_main(["--runs-dir", str(study), "--study", "reg"]) == 0
    out = capsys.readouterr().out
    assert ("warning: the search could not show that this model beats chance (corrected AUC 0.5200 [0.3800, 0.6600] "
            "includes 0.5") in out  # fmt: skip
    client = MlflowClient(default_tracking_uri(study))
    tags = client.get_model_version("cervical-staging", "2").tags
    assert tags["beats_chance"] == "false" and tags["corrected_auc"] == "0.5200" and tags["estimate"] == "holdout"
    assert int(client.get_registered_model("cervical-staging").aliases["challenger"]) == 2
    hint = json.loads((study / "reg" / "winner.json").read_text())["next"]
    assert f"promote: {hint}" in out
    champion = client.get_registered_model("cervical-staging").aliases["champion"]
    promote_best_as_hinted(study, hint, capsys)
    assert promote_main(["--runs-dir", str(study), "--version", "2"]) == 2
    err = capsys.readouterr().err
    assert "v2 was not shown to beat chance: its corrected AUC 0.520 (95% interval 0.380-0.660) includes 0.5" in err
    assert client.get_registered_model("cervical-staging").aliases["champion"] == champion


def test_generalise_bench_scores_the_registered_model(study, tmp_path) -> None:
    """bench.generalise: a fresh phantom predicted from the registry, scored against its own labels."""
    from bench.generalise import main as generalise_main

    out = tmp_path / "results"
    assert generalise_main(["--runs-dir", str(study), "--patients", "16", "--seed", "5", "--matrix", "48",
                            "--out", str(out)]) == 0  # fmt: skip
    result = json.loads((out / "generalise.json").read_text())
    client = MlflowClient(default_tracking_uri(study))
    alias = result["model"].rsplit("@", 1)[1]
    assert result["version"] == str(client.get_model_version_by_alias("cervical-staging", alias).version)
    assert 0.0 <= result["auc_ci_low"] <= result["auc"] <= result["auc_ci_high"] <= 1.0
    assert 0.5 < result["oracle_auc"] <= 1.0 and result["target_auc"] == pytest.approx(0.85 * result["oracle_auc"])
    assert result["met"] == (result["auc"] >= result["target_auc"]) and result["patients"] == 16
