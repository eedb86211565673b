"""search/commands/promote.py and search/registry/versions.py on a real sqlite MLflow registry holding a tiny pyfunc model:
promoting, refusing, forcing, listing (the chance guard and the hints `--list` prints: test_promote_hints.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow.pyfunc
import pytest

from search.commands.promote import main
from search.registry.gate import CORRECTED, estimate_kind, like_with_like
from search.registry.versions import CV, HOLDOUT, best_version, list_versions, promote, version_score
from search.study import default_tracking_uri
from tests.search.registry_helpers import (
    CV_ONLY,
    NAME,
    WITH_HOLDOUT,
    holder,
    make_registry,
    vtags,
)

ROOT = Path(__file__).resolve().parents[2]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_best_promotes_highest_holdout_auc_and_records_why(
    tmp_path: Path,
    template: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, WITH_HOLDOUT)
    before = datetime.now(UTC).replace(microsecond=0)
    assert main(["--best", "--runs-dir", str(runs)]) == 0
    assert holder(client) == 2  # best holdout AUC, although v3 has the best cv_auc
    out = capsys.readouterr().out
    assert "@champion -> cervical-staging v2" in out and "models:/cervical-staging@champion" in out
    tags = vtags(client, 2)
    assert ISO_UTC.match(tags["promoted_champion_at"])
    at = datetime.strptime(tags["promoted_champion_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= at <= datetime.now(UTC)
    assert tags["promoted_champion_reason"] == "first @champion: holdout AUC 0.830"
    assert tags["promoted_champion_previous"] == "none" and tags["promoted_champion_forced"] == "false"
    assert "promoted to @champion (previous: none)" in client.get_model_version(NAME, "2").description

    assert main(["--best", "--runs-dir", str(runs)]) == 0  # the same version again changes nothing
    assert "already holds @champion" in capsys.readouterr().out
    assert vtags(client, 2) == tags

    monkeypatch.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(runs))  # the alias loads the real model
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert list(model.predict([1.0, 2.0])) == [0.5, 0.5]


def test_lower_holdout_is_refused_and_force_overrides_with_a_record(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, WITH_HOLDOUT)
    assert main(["--version", "1", "--runs-dir", str(runs)]) == 0
    assert main(["--version", "2", "--runs-dir", str(runs)]) == 0  # better holdout: accepted without --force
    assert vtags(client, 2)["promoted_champion_reason"] == "holdout AUC 0.830 (was v1 0.790)"
    assert vtags(client, 2)["promoted_champion_previous"] == "1"
    capsys.readouterr()

    assert main(["--version", "3", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "current @champion v2 has holdout AUC 0.830 > candidate v3 0.760" in err and "--force" in err
    assert holder(client) == 2
    assert not any(k.startswith("promoted_") for k in vtags(client, 3))

    assert main(["--version", "3", "--force", "--reason", "radiologist review", "--runs-dir", str(runs)]) == 0
    assert holder(client) == 3
    tags = vtags(client, 3)
    assert tags["promoted_champion_reason"] == "radiologist review"
    assert tags["promoted_champion_previous"] == "2" and tags["promoted_champion_forced"] == "true"
    assert ISO_UTC.match(tags["promoted_champion_at"])
    description = client.get_model_version(NAME, "3").description
    assert "radiologist review [forced over v2: current @champion v2 has holdout AUC 0.830" in description
    assert "@champion moved to v3: radiologist review" in client.get_model_version(NAME, "2").description


def test_cv_auc_decides_among_versions_without_holdout(tmp_path: Path, template: tuple[Path, Path]) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, CV_ONLY)
    assert int(best_version(client, NAME).version) == 2
    result = promote(client, NAME, 2)
    assert result.changed and result.previous is None and holder(client) == 2
    with pytest.raises(Exception, match=r"cv_auc 0\.860 > candidate v3 0\.780"):
        promote(client, NAME, 3)
    assert holder(client) == 2
    forced = promote(client, NAME, 3, force=True)
    assert forced.forced and forced.previous == 2 and holder(client) == 3
    assert vtags(client, 3)["promoted_champion_reason"].startswith(
        "forced over v2: current @champion v2 has cv_auc"
    )

    # a holder with a holdout AUC against a candidate without one: not comparable (another kind of estimate)
    holdout = dict(CV_ONLY[0], holdout_auc="0.99")
    assert estimate_kind(holdout) == "holdout" and estimate_kind(CV_ONLY[1]) == "cv"
    assert "different kinds of estimate are not comparable" in like_with_like(holdout, CV_ONLY[1], "champion")
    assert like_with_like(holdout, dict(CV_ONLY[1], holdout_auc="0.5"), "champion") is None
    assert version_score(holdout) == (HOLDOUT, 0.99)
    corrected = dict(CV_ONLY[0], corrected_auc="0.61", estimate="corrected_cv")
    assert version_score(corrected) == (CORRECTED, 0.61)  # the estimate tag names what the gate compares
    assert estimate_kind(dict(corrected, corrected_auc="nan")) == "cv"  # ... when that score is there
    assert version_score(dict(CV_ONLY[0], holdout_auc="nan")) == (
        CV,
        0.81,
    )  # a non-finite tag counts as absent
    with pytest.raises(ValueError, match="has no holdout_auc, corrected_auc or cv_auc tag"):
        version_score({"study": "s1"})


def test_list_shows_every_version_with_aliases(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, WITH_HOLDOUT)
    assert main(["--version", "2", "--runs-dir", str(runs)]) == 0
    assert main(["--version", "3", "--alias", "challenger", "--runs-dir", str(runs)]) == 0  # a free alias
    capsys.readouterr()
    assert main(["--list", "--tracking-uri", default_tracking_uri(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cervical-staging: 3 version(s)"
    header, rows = lines[1], {line.split()[0]: line for line in lines[2:5]}
    assert header.split()[:6] == ["version", "aliases", "study", "trial", "backbone", "cv_auc"]
    assert rows.keys() == {"v1", "v2", "v3"}
    assert rows["v1"].split()[1:6] == ["-", "s1", "3", "resnet50", "0.840"]
    assert rows["v2"].split()[1] == "@champion" and "0.830 [0.740, 0.910]" in rows["v2"]
    assert rows["v3"].split()[1] == "@challenger" and "vit_small_patch16_224" in rows["v3"]
    assert all(row.split()[-3] == "false" for row in rows.values())  # pretrained, then the creation time
    assert lines[5] == "best on holdout AUC among cohort c0ffee: v2, already @champion"
    assert main(["--best", "--runs-dir", str(runs)]) == 0  # the hint is true: --best changes nothing
    assert "already holds @champion" in capsys.readouterr().out
    listed = list_versions(client, NAME)
    assert [r["version"] for r in listed] == [1, 2, 3] and listed[1]["aliases"] == ["champion"]
    assert all(r["run_id"] and ISO_UTC.match(r["created"]) for r in listed)


def test_user_errors_exit_2_with_a_message(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--list", "--runs-dir", str(empty)]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (empty / "mlflow.db").exists()  # listing never creates a store

    runs = tmp_path / "runs"
    client = make_registry(runs, template, WITH_HOLDOUT[:1])
    cases = {
        (
            "--list",
            "--model-name",
            "nope",
        ): "no registered model 'nope' (registered models: cervical-staging)",
        ("--version", "9"): "model 'cervical-staging' has no version 9 (versions: v1)",
        ("--best", "--model-name", "nope"): "no registered model 'nope'",
        ("--version", "1", "--alias", "latest"): "invalid alias 'latest'",
    }
    for argv, message in cases.items():
        assert main([*argv, "--runs-dir", str(runs)]) == 2, argv
        assert message in capsys.readouterr().err, argv
    client.create_registered_model("unused")
    assert main(["--best", "--model-name", "unused", "--runs-dir", str(runs)]) == 2
    assert "has no versions yet" in capsys.readouterr().err
    assert holder(client) is None
    with pytest.raises(SystemExit) as exc:
        main(["--version", "1", "--best", "--runs-dir", str(runs)])
    assert exc.value.code == 2


def test_runs_as_a_script(tmp_path: Path, template: tuple[Path, Path]) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, WITH_HOLDOUT)
    cmd = [sys.executable, "search/commands/promote.py", "--runs-dir", str(runs)]
    done = subprocess.run([*cmd, "--best"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "@champion -> cervical-staging v2" in done.stdout and holder(client) == 2
