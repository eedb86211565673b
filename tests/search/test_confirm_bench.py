"""bench.confirm on a search already run: its figures read from the study folder, its winner scored from the
registry on an independent phantom, one row per seed kept across calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import confirm


def test_confirm_adopts_a_search_and_scores_what_it_registered(
    registered_study: Path, tmp_path, capsys
) -> None:
    out = tmp_path / "results"
    argv = ["--seeds", "3", "--adopt", str(registered_study), "--patients", "16", "--phantom-seed", "5"]
    argv += ["--matrix", "48", "--out", str(out)]
    assert confirm.main(argv) == 0
    result = json.loads((out / "confirm-default.json").read_text())
    [row] = result["rows"]
    folder = registered_study / "reg"
    board = json.loads((folder / "leaderboard.json").read_text())
    winner = json.loads((folder / "winner.json").read_text())
    assert row["seed"] == 3 and row["study"] == "reg" and row["command_s"] is None
    assert row["best_trial"]["cv_auc"] == board["rows"][0]["cv_auc"]
    assert row["corrected_auc"] == board["corrected_auc"]
    assert (
        row["registered"]["kind"] == winner["kind"]
        and row["registered"]["version"] == winner["model_version"]
    )
    indep = row["indep"]
    assert 0.0 <= indep["auc_ci_low"] <= indep["auc"] <= indep["auc_ci_high"] <= 1.0
    assert row["indep_patients"] == 16 and row["indep_seed"] == 5 and 0.5 < indep["oracle_auc"] <= 1.0
    assert 0 < row["wall_s"] and result["median_indep_auc"] == indep["auc"] and result["seeds"] == [3]

    capsys.readouterr()
    assert confirm.main(argv) == 0  # a seed already scored is not scored again
    assert "seed 3: already in" in capsys.readouterr().out
    assert len(json.loads((out / "confirm-default.json").read_text())["rows"]) == 1


def test_confirm_refuses_what_it_cannot_time_or_score(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="one seed"):
        confirm.main(["--seeds", "0,1", "--adopt", str(tmp_path)])
    with pytest.raises(SystemExit, match="expected one study folder, found none"):
        confirm.main(["--seeds", "0", "--adopt", str(tmp_path), "--out", str(tmp_path / "r")])
    (tmp_path / "s" / "logs").mkdir(parents=True)
    (tmp_path / "s" / "logs" / "search.log").write_text("no stamps\n")
    with pytest.raises(SystemExit, match="no timestamps"):
        confirm.log_span(tmp_path / "s")


def test_paired_bench_scores_the_registered_model_against_the_best_single_trial(
    registered_study: Path, tmp_path: Path
) -> None:
    """The fixture registered its best single trial, so the paired difference is exactly 0; the bench builds
    that trial's model in memory and leaves the study folder and the registry exactly as they were."""
    from mlflow.tracking import MlflowClient

    from bench import paired
    from search.study import default_tracking_uri

    folder = registered_study / "reg"
    before = {name: (folder / name).read_bytes() for name in ("winner.json", "model_card.md")}
    figures = sorted(p.name for p in (folder / "explain").iterdir())
    winner = json.loads(before["winner.json"])
    client = MlflowClient(default_tracking_uri(registered_study))
    name = winner["model_name"]
    versions = sorted(v.version for v in client.search_model_versions(f"name='{name}'"))
    out = tmp_path / "results"
    argv = ["--runs", str(registered_study), "--patients", "16", "--phantom-seed", "5", "--matrix", "48"]
    assert paired.main([*argv, "--resamples", "200", "--out", str(out)]) == 0
    result = json.loads((out / "paired-reg.json").read_text())
    assert result["registered_kind"] == "single" and result["single_trial"] == winner["trial"]
    assert result["difference"] == 0.0 and result["difference_ci"] == [0.0, 0.0]
    assert result["auc_registered"] == result["auc_single"] and result["patients"] == 16
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in (folder / "explain").iterdir()) == figures
    assert sorted(v.version for v in client.search_model_versions(f"name='{name}'")) == versions


def test_paired_bench_refuses_a_folder_without_a_registered_study(tmp_path: Path, capsys) -> None:
    from bench import paired

    assert paired.main(["--runs", str(tmp_path)]) == 2
    assert "no finished, registered study there" in capsys.readouterr().err
