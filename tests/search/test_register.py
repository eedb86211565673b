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
                "holdout_auc_ci_high", "cohort_hash", "pretrained"):  # fmt: skip
        assert key in tags, key
    assert tags["study"] == "reg" and tags["pretrained"] == "false"
    mlflow.set_tracking_uri(default_tracking_uri(study))
    info = mlflow.models.get_model_info(f"models:/cervical-staging/{versions[0].version}")
    assert info.signature is not None and info.saved_input_example_info is not None


def test_promote_predict_round_trip(study, tiny_cohort, tmp_path, capsys) -> None:
    assert promote_main(["--runs-dir", str(study), "--best"]) == 0
    mlflow.set_tracking_uri(default_tracking_uri(study))
    model = mlflow.pyfunc.load_model("models:/cervical-staging@champion")
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

    r = rows[0]
    code = predict_main(["--runs-dir", str(study), "--image", str(base / r["image"]), "--mask",
                         str(base / r["mask"]), "--patient-id", r["patient_id"]])  # fmt: skip
    assert code == 0
    assert f"{expected[r['patient_id']]:.3f}" in capsys.readouterr().out

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
