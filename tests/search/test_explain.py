"""What the registered model sees (`search.models.explain`): the input and saliency figures drawn at
registration, stored in the study folder and with the model's run, and `predict --explain` for a new scan."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from search.commands.predict import main as predict_main
from search.commands.register import main as register_main
from search.study import default_tracking_uri

pytestmark = pytest.mark.slow


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


@pytest.fixture()
def single_version(registered_study: Path):
    """winner.json of the single best trial the search registered, with the figures drawn for it. Modules that
    run earlier may have registered other kinds on the shared study (each draws its own figures): then the
    single trial is registered again and winner.json put back after. Run in file order, nothing is registered
    here, so the version numbers other modules count on stay as the search left them."""
    winner_file = registered_study / "reg" / "winner.json"
    saved = winner_file.read_text()
    facts = json.loads((registered_study / "reg" / "explain" / "explain.json").read_text())
    if facts["kind"] == json.loads(saved)["kind"] == "single":
        yield json.loads(saved)
        return
    try:
        assert register_main(["--runs-dir", str(registered_study), "--study", "reg", "--kind", "single"]) == 0
        yield json.loads(winner_file.read_text())
    finally:
        winner_file.write_text(saved)


def test_registration_draws_inputs_and_saliency(registered_study: Path, single_version: dict) -> None:
    folder = registered_study / "reg" / "explain"
    facts = json.loads((folder / "explain.json").read_text())
    winner = single_version
    assert facts["kind"] == winner["kind"] == "single" and facts["method"].startswith("SmoothGrad")
    assert facts["threshold"] == pytest.approx(winner["threshold"])
    for stem in ("inputs", "saliency"):
        assert min(_png(folder / f"{stem}.png")) >= 300
        assert "<svg" in (folder / f"{stem}.svg").read_text()[:2000]
    shown = facts["patients"]
    assert shown and len({p["patient_id"] for p in shown}) == len(shown)
    for p in shown:  # each call is the out-of-fold one, at the registered threshold
        assert p["called"] == ("T2" if p["p_t2"] >= facts["threshold"] else "T1")
        assert p["correct"] == (p["called"] == p["label"])
        assert 0.0 <= p["lesion_share"] <= 1.0 and 0.0 < p["uniform_share"] < 1.0
    # and with the model's run in MLflow
    client = MlflowClient(default_tracking_uri(registered_study))
    version = client.get_model_version("cervical-staging", str(winner["model_version"]))
    logged = {f.path for f in client.list_artifacts(version.run_id, "explain")}
    assert {"explain/inputs.png", "explain/saliency.png", "explain/explain.json"} <= logged


def test_predict_explain_writes_a_map_per_scan(
    registered_study: Path, tiny_cohort: Path, tmp_path: Path, capsys
) -> None:
    rows = list(csv.DictReader(open(tiny_cohort)))
    base, r = tiny_cohort.parent, rows[0]
    out = tmp_path / "maps"
    args = ["--runs-dir", str(registered_study), "--model", "models:/cervical-staging/1"]
    scan = ["--image", str(base / r["image"]), "--mask", str(base / r["mask"]), "--patient-id", "new/1"]
    assert predict_main([*args, *scan, "--explain", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"saliency maps of 1 scan(s) written to {out}" in said
    assert min(_png(out / "new_1.png")) >= 300 and (out / "new_1.svg").exists()
