"""Candidates of every kind on a real tiny search, and the deep ensemble registered, predicted from the registry
(in process, by `stagesearch predict` on a labelled manifest, and served over HTTP)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.commands.predict import main as predict_main
from search.commands.register import main as register_main
from search.stats.candidates_text import candidate_lines
from search.study import Leaderboard, default_tracking_uri
from tests.search.serving import post, served_model

pytestmark = pytest.mark.slow


def test_the_search_compares_every_kind_on_its_folds(registered_study) -> None:
    board = json.loads((registered_study / "reg" / "leaderboard.json").read_text())
    config = json.loads((registered_study / "reg" / "config.json").read_text())
    candidates = board["candidates"]
    assert set(candidates["kinds"]) == {"single", "ensemble", "radiomics"}, candidates
    radiomics = optuna.load_study(study_name="reg-radiomics", storage=config["storage"])
    points = [t.params["classifier"] for t in radiomics.trials]
    assert points == ["logistic", "random_forest", "hist_gb"]  # each classifier's reference first (3 trials)
    assert candidates["kinds"]["radiomics"]["candidate"] in {"r0", "r1", "r2"}
    assert [f["trials"] for f in candidates["families"]] == [1, 1, 1]
    assert radiomics.trials[0].value == pytest.approx(board["baseline"]["cv_auc"])  # the baseline's model
    assert candidates["kinds"]["single"]["candidate"] == board["rows"][0]["trial"]
    assert candidates["registered"] in candidates["kinds"] and candidates["used"] > 0
    assert candidates["kinds"]["single"]["corrected_auc"] == pytest.approx(board["corrected_auc"])
    low, high = candidates["difference"]["ci"]
    assert low <= candidates["difference"]["mean"] <= high and candidates["difference"]["words"]
    lines = candidate_lines(Leaderboard.from_json(board, registered_study).candidates)
    assert any(
        line.lstrip().startswith("whole selection") and line.endswith("<- quote this") for line in lines
    ), lines
    assert any(line.lstrip().startswith("deep ensemble") for line in lines), lines


@pytest.fixture()
def ensemble_version(registered_study, tmp_path):
    """The deep ensemble of the search's two complete trials (weights 2 and 1: registration takes any weights,
    as an earlier version's greedy selection wrote them) registered with `stagesearch register --kind ensemble`; the study's files are put back after."""
    folder = registered_study / "reg"
    saved = {name: (folder / name).read_text() for name in ("leaderboard.json", "winner.json")}
    board = json.loads(saved["leaderboard.json"])
    numbers = sorted(int(p.parent.parent.name) for p in (folder / "trials").glob("*/models/trial.json"))
    assert len(numbers) == 2, numbers  # both complete trials kept their fold models (the ensemble's members)
    first, second = numbers
    board["candidates"]["kinds"]["ensemble"]["members"] = [
        {"trial": first, "weight": 2},
        {"trial": second, "weight": 1},
    ]
    (folder / "leaderboard.json").write_text(json.dumps(board))
    try:
        args = ["--runs-dir", str(registered_study), "--study", "reg", "--kind", "ensemble"]
        assert register_main(args) == 0
        winner = json.loads((folder / "winner.json").read_text())
        yield winner, (first, second)
    finally:
        for name, text in saved.items():
            (folder / name).write_text(text)


def _held_rows(registered_study: Path, tiny_cohort: Path, winner: dict) -> list[dict]:
    expected = {p["patient_id"] for p in winner["holdout"]["predictions"]}
    with open(tiny_cohort) as fh:
        return [r for r in csv.DictReader(fh) if r["patient_id"] in expected]


def test_the_deep_ensemble_is_registered_and_predicts_as_it_was_scored(
    registered_study, ensemble_version, tiny_cohort, tmp_path, capsys
) -> None:
    winner, (first, second) = ensemble_version
    assert winner["kind"] == "ensemble" and [m["trial"] for m in winner["members"]] == [first, second]
    version = str(winner["model_version"])
    client = MlflowClient(default_tracking_uri(registered_study))
    tags = client.get_model_version("cervical-staging", version).tags
    assert tags["kind"] == "ensemble" and tags["members"] == f"{first}x2,{second}x1", tags
    assert float(tags["cv_auc"]) == pytest.approx(winner["cv_auc"], abs=1e-4)
    card = client.get_model_version("cervical-staging", version).description
    assert f"- Deep ensemble of trials {first}x2,{second}x1 (trial x weight;" in card, card
    # the registered P(T2) is the weighted mean of the members', as the members' OOF tables were combined
    oof = {}
    for n in (first, second):
        with open(registered_study / "reg" / "trials" / str(n) / "oof.csv") as fh:
            oof[n] = {r["patient_id"]: float(r["prob"]) for r in csv.DictReader(fh)}
    mixed = {p: (2 * oof[first][p] + oof[second][p]) / 3 for p in oof[first]}
    from trainers.metrics import auc

    ids = sorted(mixed)
    with open(tiny_cohort) as fh:
        label = {r["patient_id"]: int(r["label"] == "T2") for r in csv.DictReader(fh)}
    assert winner["cv_auc"] == pytest.approx(
        auc(np.array([label[p] for p in ids]), np.array([mixed[p] for p in ids]))
    )

    rows = _held_rows(registered_study, tiny_cohort, winner)
    expected = {p["patient_id"]: p["prob"] for p in winner["holdout"]["predictions"]}
    base = tiny_cohort.parent
    mlflow.set_tracking_uri(default_tracking_uri(registered_study))
    model = mlflow.pyfunc.load_model(f"models:/cervical-staging/{version}")
    import pandas as pd

    table = pd.DataFrame(
        {
            "patient_id": [r["patient_id"] for r in rows],
            "image": [str(base / r["image"]) for r in rows],
            "mask": [str(base / r["mask"]) for r in rows],
        }
    )
    out = model.predict(table)
    for pid, p in zip(out["patient_id"], out["p_t2"], strict=True):
        assert p == pytest.approx(expected[pid], abs=1e-5)

    labelled = tmp_path / "labelled.csv"
    labelled.write_text(
        "image,mask,label\n" + "".join(f"{base / r['image']},{base / r['mask']},{r['label']}\n" for r in rows)
    )
    model_uri = f"models:/cervical-staging/{version}"
    argv = ["--runs-dir", str(registered_study), "--manifest", str(labelled), "--model", model_uri]
    assert predict_main([*argv, "--out", str(tmp_path / "preds.csv")]) == 0
    printed = capsys.readouterr().out
    assert f"AUC {winner['holdout']['auc']:.3f} (95% CI" in printed, printed

    with served_model(registered_study, model_uri, tmp_path) as url:
        r = rows[0]
        status, body = post(
            f"{url}/invocations", [{"image": str(base / r["image"]), "mask": str(base / r["mask"])}]
        )
        assert status == 200, body
        assert body["predictions"][0]["p_t2"] == pytest.approx(expected[r["patient_id"]], abs=1e-5)


def test_a_trial_cannot_be_registered_as_another_kind(registered_study, capsys) -> None:
    args = ["--runs-dir", str(registered_study), "--study", "reg", "--trial", "0", "--kind", "ensemble"]
    assert register_main(args) == 2
    assert "cannot be registered as --kind ensemble" in capsys.readouterr().err


def test_the_radiomics_model_is_registered_served_and_refuses_a_scan_without_its_mask(
    registered_study, tiny_cohort, tmp_path
) -> None:
    """`register --kind radiomics`: the baseline's fold models on its features, the same out-of-fold AUC the
    search scored; predicted from the registry and over HTTP; a scan without a mask is refused by name."""
    from mlflow.exceptions import MlflowException

    folder = registered_study / "reg"
    saved = (folder / "winner.json").read_text()
    board = json.loads((folder / "leaderboard.json").read_text())
    try:
        args = ["--runs-dir", str(registered_study), "--study", "reg", "--kind", "radiomics"]
        assert register_main(args) == 0
        winner = json.loads((folder / "winner.json").read_text())
    finally:
        (folder / "winner.json").write_text(saved)
    assert winner["kind"] == "radiomics" and winner["family"] == "radiomics"
    chosen = board["candidates"]["kinds"]["radiomics"]["candidate"]  # the radiomics trial the search chose
    trial = json.loads((folder / "radiomics" / chosen[1:] / "trial.json").read_text())
    assert winner["cv_auc"] == pytest.approx(trial["cv_auc"]) and winner["params"]["candidate"] == chosen
    version = str(winner["model_version"])
    client = MlflowClient(default_tracking_uri(registered_study))
    described = client.get_model_version("cervical-staging", version)
    assert described.tags["kind"] == "radiomics" and described.tags["masks"] == "true", described.tags
    assert "- Radiomics model of study `reg`:" in described.description

    rows = _held_rows(registered_study, tiny_cohort, winner)
    expected = {p["patient_id"]: p["prob"] for p in winner["holdout"]["predictions"]}
    base = tiny_cohort.parent
    mlflow.set_tracking_uri(default_tracking_uri(registered_study))
    model = mlflow.pyfunc.load_model(f"models:/cervical-staging/{version}")
    import pandas as pd

    records = [
        {"patient_id": r["patient_id"], "image": str(base / r["image"]), "mask": str(base / r["mask"])}
        for r in rows
    ]
    out = model.predict(pd.DataFrame(records))
    for pid, p in zip(out["patient_id"], out["p_t2"], strict=True):
        assert p == pytest.approx(expected[pid], abs=1e-6)
    with pytest.raises(
        MlflowException, match=f"trained on lesion features .* no mask was given for {rows[0]['patient_id']}"
    ):
        model.predict(pd.DataFrame([{"patient_id": rows[0]["patient_id"], "image": records[0]["image"]}]))

    with served_model(registered_study, f"models:/cervical-staging/{version}", tmp_path) as url:
        status, body = post(f"{url}/invocations", records[:1])
        assert status == 200, body
        assert body["predictions"][0]["p_t2"] == pytest.approx(expected[rows[0]["patient_id"]], abs=1e-6)
        status, body = post(f"{url}/invocations", [{"image": records[0]["image"]}])
        assert status == 400 and "no mask was given" in body["message"], body
