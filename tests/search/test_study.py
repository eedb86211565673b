"""The study folder without Ray: format versions, conflicting or changed resumes, leaderboard and OOF files."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import optuna
import pytest

from search.commands.run import main
from search.study import (
    FORMAT_VERSION,
    LEADERBOARD_SCHEMA,
    Leaderboard,
    StudyFormatError,
    StudyPaths,
    check_format,
    leaderboard,
    load_config,
    read_leaderboard,
    read_oof,
    write_leaderboard,
    write_oof,
)
from search.tune.driver import _parallel_slots
from tests.search.conftest import search_args

STORED = {
    "settings": {
        "space": "tiny",
        "manifest": None,
        "phantom_patients": 112,
        "folds": 3,
        "cv_group": "patient",
        "max_epochs": 2,
        "holdout": 0.0,
        "seed": 0,
        "pretrained": False,
    },
    "manifest_path": "cohort.csv",
    "cohort_hash": "0" * 16,
}


def _stored_study(runs: Path, name: str, manifest: Path, **changes: object) -> Path:
    """A study folder as `stagesearch run` writes it, on `manifest`, with top-level keys changed."""
    from trainers.manifest import load_manifest
    from trainers.preprocess import PREPROCESS_VERSION

    config = {
        **STORED,
        "study": name,
        "manifest_path": str(manifest.resolve()),
        "cohort_hash": load_manifest(manifest, folds=3).content_hash(),
        "format": FORMAT_VERSION,
        "preprocess_version": PREPROCESS_VERSION,
    }
    config["settings"] = {**STORED["settings"], "manifest": str(manifest)}
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (runs / name).mkdir(parents=True)
    (runs / name / "config.json").write_text(json.dumps(config))
    return runs / name


def test_format_versions(tmp_path: Path) -> None:
    assert check_format({**STORED, "format": FORMAT_VERSION}, tmp_path) == FORMAT_VERSION
    assert check_format(STORED, tmp_path) == 1  # folders from before the version was recorded
    with pytest.raises(StudyFormatError, match="newer than this stagesearch.*upgrade"):
        check_format({**STORED, "format": FORMAT_VERSION + 1}, tmp_path)
    with pytest.raises(StudyFormatError, match="lacks cohort_hash.*new --study"):
        check_format({"settings": {}, "manifest_path": "x"}, tmp_path)


def test_resume_refuses_a_folder_from_a_newer_version(tiny_cohort: Path, runs: Path, capsys) -> None:
    folder = _stored_study(runs, "future", tiny_cohort, format=FORMAT_VERSION + 1)
    before = sorted(p.name for p in folder.iterdir())
    assert main(search_args(tiny_cohort, runs, "future", "--resume")) == 2
    assert "newer than this stagesearch understands" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_resume_refuses_a_conflicting_flag(tiny_cohort: Path, runs: Path, capsys) -> None:
    _stored_study(runs, "s", tiny_cohort)
    assert main(search_args(tiny_cohort, runs, "s", "--resume", "--folds", "4")) == 2
    assert "--folds 4 conflicts with this study's 3" in capsys.readouterr().err


def test_resume_refuses_a_changed_cohort(tiny_cohort: Path, runs: Path, tmp_path: Path, capsys) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort.parent, cohort)
    manifest = cohort / tiny_cohort.name
    _stored_study(runs, "s", manifest)
    first_image = manifest.read_text().splitlines()[1].split(",")[1]
    os.utime(cohort / first_image, ns=(0, 0))  # the same rows, but a scan file changed on disk
    assert main(search_args(manifest, runs, "s", "--resume")) == 2
    err = capsys.readouterr().err
    assert "was made on cohort" in err and "start a new --study" in err
    assert not (runs / "s" / "optuna.db").exists()


def test_parallel_slots() -> None:
    assert _parallel_slots({"CPU": 8}, {"cpu": 2, "gpu": 0}, 0) == 4
    assert _parallel_slots({"CPU": 8, "GPU": 2}, {"cpu": 1, "gpu": 0.25}, 0) == 8
    assert _parallel_slots({"CPU": 8, "GPU": 1}, {"cpu": 1, "gpu": 0.25}, 0) == 4  # GPUs bind first
    assert _parallel_slots({"CPU": 2, "GPU": 4}, {"cpu": 1, "gpu": 0.5}, 0) == 2  # then CPUs
    assert _parallel_slots({"CPU": 8}, {"cpu": 2, "gpu": 0}, 3) == 3  # --max-concurrent caps
    assert _parallel_slots({"CPU": 1}, {"cpu": 2, "gpu": 0}, 0) == 1  # always at least one
    assert _parallel_slots({"CPU": 16, "GPU": 0.7}, {"cpu": 1, "gpu": 0.1}, 0) == 7  # 0.7/0.1 is 7, not 6.99


def test_oof_table_round_trip(tmp_path: Path) -> None:
    path = StudyPaths(tmp_path).oof(7)
    rows = [
        {"patient_id": "P1", "label": 1, "prob": 0.75, "fold": 0, "extra": "x"},
        {"patient_id": "P2", "label": 0, "prob": 0.25, "fold": 1},
    ]
    write_oof(path, rows, epoch=3)
    assert path == tmp_path / "trials" / "7" / "oof.csv"
    assert read_oof(path) == [
        {"patient_id": "P1", "label": 1, "prob": 0.75, "fold": 0, "epoch": 3},
        {"patient_id": "P2", "label": 0, "prob": 0.25, "fold": 1, "epoch": 3},
    ]
    assert read_oof(tmp_path / "none.csv") is None
    assert not list(path.parent.glob("*.tmp"))


def test_leaderboard_best_per_family_and_its_schema(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "s")
    study = optuna.create_study(study_name="s", direction="maximize")
    dist = {"backbone": optuna.distributions.CategoricalDistribution(["a", "b", "c"])}
    for backbone, family, value, state in [
        ("a", "F1", 0.6, "COMPLETE"),
        ("b", "F1", 0.7, "COMPLETE"),
        ("c", "F2", 0.65, "COMPLETE"),
        ("c", "F2", 0.9, "PRUNED"),
    ]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"backbone": backbone},
                distributions=dist,
                value=value if state == "COMPLETE" else None,
                state=optuna.trial.TrialState[state],
                intermediate_values={1: value},
                user_attrs={"family": family, "accuracy": 0.5, "fold_auc_sd": math.nan},
            )
        )
    write_oof(paths.oof(1), [{"patient_id": "P", "label": 1, "prob": 0.5, "fold": 0}], 1)
    board = leaderboard(study, paths)
    assert [(r.family, r.backbone, r.trial, r.cv_auc) for r in board.rows] == [
        ("F1", "b", 1, 0.7),
        ("F2", "c", 2, 0.65),
    ]
    assert board.rows[0].oof == "trials/1/oof.csv" and board.rows[1].oof is None
    assert board.counts["complete"] == 3 and board.counts["pruned"] == 1
    write_leaderboard(paths, board)
    data = json.loads(paths.leaderboard.read_text())
    assert data["schema"] == LEADERBOARD_SCHEMA and "fold_auc_sd" not in data["rows"][0]["metrics"]  # no NaN
    assert read_leaderboard(paths).rows[0].metrics == {"accuracy": 0.5}
    paths.leaderboard.write_text(json.dumps({"counts": {}, "rows": []}))  # a format-1 leaderboard
    with pytest.raises(StudyFormatError, match="leaderboard schema none.*--resume"):
        read_leaderboard(paths)
    assert isinstance(Leaderboard.from_json(data, paths.leaderboard), Leaderboard)


def test_narrowing_from_the_command_line_is_checked_and_recorded(
    tiny_cohort: Path, runs: Path, capsys
) -> None:
    from search.session.configure import configure
    from search.session.options import build_parser
    from search.study.inputs import study_space

    assert main(search_args(tiny_cohort, runs, "n", "--backbones", "densenet121,resnet10t")) == 2
    assert "--backbones: densenet121 not in space 'tiny'" in capsys.readouterr().err
    assert not runs.exists()

    flags = search_args(tiny_cohort, runs, "n", "--backbones", "resnet10t", "--resolutions", "48")
    config, paths, _ = configure(build_parser().parse_args(flags), flags)
    stored = load_config(paths).settings
    assert stored.backbones == ["resnet10t"] and stored.resolutions == [48]
    sampled = study_space(stored).space(optuna.create_study().ask())
    assert sampled["backbone"] == "resnet10t" and sampled["resolution"] == 48

    assert main(search_args(tiny_cohort, runs, "n", "--resume", "--backbones", "tiny_cnn")) == 2
    assert "--backbones ['tiny_cnn'] conflicts with this study's ['resnet10t']" in capsys.readouterr().err
    again = search_args(tiny_cohort, runs, "n", "--resume")
    config, _, _ = configure(build_parser().parse_args(again), again)  # no flag: the recorded narrowing
    assert config.settings.backbones == ["resnet10t"] and len(config.sessions) == 2
