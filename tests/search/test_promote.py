"""search/promote.py and search/registry.py on a real sqlite MLflow registry holding a tiny pyfunc model."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow.pyfunc
import pytest
from mlflow.tracking import MlflowClient

from search.gate import CORRECTED, estimate_kind, like_with_like
from search.promote import main
from search.registry import (
    CV,
    DEFAULT_MODEL_NAME,
    HOLDOUT,
    best_version,
    list_versions,
    promote,
    version_score,
)
from search.study import default_tracking_uri

ROOT = Path(__file__).resolve().parents[2]
NAME = DEFAULT_MODEL_NAME
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class ConstantStager(mlflow.pyfunc.PythonModel):
    """Predicts P(T2) = 0.5 for every patient: enough to register, alias and load."""

    def predict(self, context: object, model_input: list[float], params: dict | None = None) -> list[float]:
        return [0.5 for _ in model_input]


def _tags(
    study: str, trial: int, backbone: str, cv: float, holdout: tuple[float, float, float] | None
) -> dict:
    tags = {"study": study, "trial": str(trial), "backbone": backbone, "family": backbone.split("_")[0],
            "cv_auc": str(cv), "cohort_hash": "c0ffee", "pretrained": "false"}  # fmt: skip
    if holdout is not None:
        tags.update(zip((HOLDOUT, f"{HOLDOUT}_ci_low", f"{HOLDOUT}_ci_high"), map(str, holdout), strict=True))
    return tags


WITH_HOLDOUT = [  # v3 has the best cv_auc, v2 the best holdout AUC
    _tags("s1", 3, "resnet50", 0.84, (0.79, 0.70, 0.88)),
    _tags("s2", 7, "hrnet_w18_small_v2", 0.80, (0.83, 0.74, 0.91)),
    _tags("s3", 1, "vit_small_patch16_224", 0.88, (0.76, 0.66, 0.85)),
]
CV_ONLY = [
    _tags("s1", 0, "resnet50", 0.81, None),
    _tags("s2", 4, "densenet121", 0.86, None),
    _tags("s3", 2, "regnety_008", 0.78, None),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an initialised empty sqlite store, a saved pyfunc model), made once: creating the schema takes seconds."""
    root = tmp_path_factory.mktemp("registry_template")
    mlflow.pyfunc.save_model(str(root / "model"), python_model=ConstantStager(), pip_requirements=["mlflow"])
    db = root / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    assert db.exists()
    return db, root / "model"


def make_registry(runs: Path, template: tuple[Path, Path], versions: list[dict]) -> MlflowClient:
    """`runs/mlflow.db` with model `cervical-staging` holding one version per tag set, each from its own run."""
    db, model_dir = template
    runs.mkdir(parents=True)
    shutil.copy(db, runs / "mlflow.db")
    uri = default_tracking_uri(runs)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("studies", artifact_location=(runs / "artifacts").as_uri())
    client.create_registered_model(NAME)
    for tags in versions:
        run = client.create_run(exp, tags={"role": "search", "study": tags["study"]})
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
        client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags)
    return client


def holder(client: MlflowClient, alias: str = "champion") -> int | None:
    """The version number holding `alias`, read back from the registry."""
    found = client.get_registered_model(NAME).aliases.get(alias)
    return None if found is None else int(found)


def vtags(client: MlflowClient, version: int) -> dict[str, str]:
    return client.get_model_version(NAME, str(version)).tags


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
    cmd = [sys.executable, "search/promote.py", "--runs-dir", str(runs)]
    done = subprocess.run([*cmd, "--best"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "@champion -> cervical-staging v2" in done.stdout and holder(client) == 2


GOOD = dict(_tags("good", 1, "resnet50", 0.84, (0.80, 0.70, 0.90)), beats_chance="true", estimate="holdout")
LUCKY = dict(  # the higher hold-out AUC, but its intervals include 0.5
    _tags("lucky", 2, "densenet121", 0.90, (0.85, 0.48, 1.0)), beats_chance="false", estimate="holdout",
    corrected_auc="0.55", corrected_auc_ci_low="0.47", corrected_auc_ci_high="0.63",
)  # fmt: skip


def test_chance_guard_refuses_a_lucky_winner_and_lets_a_good_one_through(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [GOOD, LUCKY])
    flags = ["--runs-dir", str(runs)]
    assert main(["--list", *flags]) == 0  # v2 scores higher but is at chance: --best ranks v1, and says so
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"best on holdout AUC among cohort c0ffee: v1: promote it with `stagesearch promote --runs-dir {runs} --best`"
    )
    assert main(["--best", *flags]) == 0  # a good winner, promoted without --force
    assert holder(client) == 1 and vtags(client, 1)["promoted_champion_forced"] == "false"
    capsys.readouterr()
    assert main(["--list", *flags]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "best on holdout AUC among cohort c0ffee: v1, already @champion"

    assert main(["--version", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert ("v2 was not shown to beat chance: its corrected AUC 0.550 (95% interval 0.470-0.630) includes 0.5 "
            "and its hold-out AUC 0.850 (95% interval 0.480-1.000) includes 0.5") in err  # fmt: skip
    assert "pass --force" in err and holder(client) == 1
    assert main(["--version", "2", "--alias", "challenger", *flags]) == 0  # the guard keeps only serving aliases
    assert main(["--version", "2", "--force", *flags]) == 0
    assert holder(client) == 2 and vtags(client, 2)["promoted_champion_forced"] == "true"
    assert vtags(client, 2)["promoted_champion_reason"].startswith("forced over v1: v2 was not shown to beat chance")
    capsys.readouterr()
    assert main(["--list", *flags]) == 0  # a model shown to beat chance may replace a forced chance-level one
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"best on holdout AUC among cohort c0ffee: v1: promote it with `stagesearch promote --runs-dir {runs} --best`"
    )
    assert main(["--best", *flags]) == 0 and holder(client) == 1
    assert vtags(client, 1)["promoted_champion_reason"] == (
        "v1 was shown to beat chance and current @champion v2 was not (holdout AUC 0.800, was 0.850)"
    )


def test_best_refuses_when_the_only_winner_is_at_chance(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [LUCKY])
    flags = ["--runs-dir", str(runs)]
    assert main(["--list", *flags]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint.startswith("best on holdout AUC among cohort c0ffee: v1; --best would refuse it: v1 was not shown")
    assert hint.endswith(f"; to promote it anyway: `stagesearch promote --runs-dir {runs} --version 1 --force`")
    assert main(["--best", *flags]) == 2  # the hint was true
    err = capsys.readouterr().err
    assert "v1 was not shown to beat chance" in err and "pass --force" in err and holder(client) is None
    assert main(["--best", "--force", *flags]) == 0 and holder(client) == 1
    assert vtags(client, 1)["promoted_champion_reason"].startswith("forced: v1 was not shown to beat chance")


def test_gate_compares_only_the_same_cohort_and_kind_of_estimate(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = dict(_tags("other", 5, "densenet121", 0.95, (0.93, 0.85, 0.99)), cohort_hash="beef01")
    cv_only = dict(_tags("cv", 6, "regnety_008", 0.97, None))
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [WITH_HOLDOUT[0], other, WITH_HOLDOUT[1], cv_only])
    flags = ["--runs-dir", str(runs)]

    def hint() -> str:
        assert main(["--list", *flags]) == 0
        return capsys.readouterr().out.splitlines()[-1]

    # no champion yet: the newest version's cohort (c0ffee) on its most honest estimate (holdout): v3
    assert hint() == (f"best on holdout AUC among cohort c0ffee: v3: promote it with `stagesearch promote --runs-dir "
                      f"{runs} --best`; left out (another cohort or kind of estimate, not comparable): v2, v4 (promote "
                      f"one with `stagesearch promote --runs-dir {runs} --version N --force`)")  # fmt: skip
    assert main(["--version", "1", *flags]) == 0
    capsys.readouterr()
    assert main(["--version", "2", *flags]) == 2
    assert ("v2 was made on cohort beef01 but current @champion v1 on cohort c0ffee: AUCs measured on different "
            "patients are not comparable; pass --force") in capsys.readouterr().err  # fmt: skip
    assert main(["--version", "4", *flags]) == 2
    assert ("v4 is scored on cv_auc but current @champion v1 on holdout AUC: different kinds of estimate are not "
            "comparable") in capsys.readouterr().err  # fmt: skip
    assert holder(client) == 1
    assert hint().startswith("best on holdout AUC among cohort c0ffee: v3: promote it with `stagesearch promote")
    assert main(["--best", *flags]) == 0 and holder(client) == 3  # not v2 (0.93 on another cohort), not v4
    assert "@champion -> cervical-staging v3 (previous: v1): holdout AUC 0.830 (was v1 0.790)" in capsys.readouterr().out
    assert hint().startswith("best on holdout AUC among cohort c0ffee: v3, already @champion; left out")
    assert main(["--best", *flags]) == 0 and "already holds" in capsys.readouterr().out

    assert main(["--version", "2", "--force", "--reason", "new cohort", *flags]) == 0 and holder(client) == 2
    assert vtags(client, 2)["promoted_champion_reason"] == "new cohort"
    assert "forced over v3: v2 was made on cohort beef01" in client.get_model_version(NAME, "2").description
    capsys.readouterr()
    assert hint() == ("best on holdout AUC among cohort beef01: v2, already @champion; left out (another cohort or "
                      "kind of estimate, not comparable): v1, v3, v4 (promote one with `stagesearch promote "
                      f"--runs-dir {runs} --version N --force`)")  # fmt: skip


def test_registration_moves_challenger_to_the_newest_version(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from search.register import make_challenger

    runs = tmp_path / "runs"
    client = make_registry(runs, template, [GOOD, LUCKY, WITH_HOLDOUT[1]])
    uri = default_tracking_uri(runs)
    flags = ["--runs-dir", str(runs)]
    assert make_challenger(uri, NAME, "1") == (
        "best on holdout AUC among cohort c0ffee: v3: promote it with `stagesearch promote --best`"
    )
    assert holder(client, "challenger") == 1
    assert main(["--best", *flags]) == 0 and holder(client) == 3
    hint = make_challenger(uri, NAME, "2")  # a chance-level version is registered after a champion
    assert holder(client, "challenger") == 2 and holder(client) == 3
    assert hint == "best on holdout AUC among cohort c0ffee: v3, already @champion"
    capsys.readouterr()
    assert main(["--best", *flags]) == 0 and "already holds" in capsys.readouterr().out  # true after registration


def test_a_tie_keeps_the_holder_so_list_says_nothing_to_promote(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same study registered twice gives two versions with equal scores: once one of them is promoted,
    `--list` must not tell the user to promote the other (a promotion that changes nothing)."""
    runs = tmp_path / "runs"
    client = make_registry(runs, template, [GOOD, dict(GOOD)])
    flags = ["--runs-dir", str(runs)]
    assert main(["--version", "1", *flags]) == 0 and holder(client) == 1
    capsys.readouterr()
    assert main(["--list", *flags]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "best on holdout AUC among cohort c0ffee: v1, already @champion"
    assert "promote it with" not in out
    assert main(["--best", *flags]) == 0 and "already holds @champion" in capsys.readouterr().out


def test_refusal_and_hints_name_the_exact_command(
    tmp_path: Path, template: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused promotion ends with the command that forces it; another model name and alias are carried."""
    runs = tmp_path / "runs"
    make_registry(runs, template, [LUCKY])
    assert main(["--version", "1", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"pass --force to promote v1 anyway: `stagesearch promote --runs-dir {runs} --version 1 --force`"
    )
    assert main(["--list", "--alias", "staging", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(
        f"to promote it anyway: `stagesearch promote --runs-dir {runs} --version 1 --force --alias staging`"
    )
