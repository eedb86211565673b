"""What the search refuses about its inputs before anything is written: one scan under two patient ids
(unless allowed, and then recorded), and a study made with another preprocessing version (resume and refit)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from search.commands.run import main
from search.session.configure import configure
from search.session.options import build_parser
from search.study import StudyPaths, default_storage_url
from tests.search.conftest import search_args
from tests.search.test_study import _stored_study
from tests.trainers.test_duplicates import bitmap_cohort, copied_cohort
from trainers.preprocess import PREPROCESS_VERSION


def test_a_copied_scan_is_refused_unless_allowed(
    tiny_cohort: Path, runs: Path, tmp_path: Path, capsys
) -> None:
    manifest, original, copy = copied_cohort(tiny_cohort, tmp_path / "c")
    assert main(search_args(manifest, runs, "dup", "--budget", "2")) == 2  # 2: were it run
    err = capsys.readouterr().err
    assert f"one scan (identical voxel data) under 2 patient ids: {copy} (copy.nii), {original} (" in err
    assert "pass --allow-duplicate-scans to search anyway" in err
    assert not runs.exists()  # refused before anything is written

    flags = search_args(manifest, runs, "dup", "--allow-duplicate-scans")
    config, paths, _ = configure(build_parser().parse_args(flags), flags)
    assert "warning: searching with scans shared by several patient ids" in capsys.readouterr().err
    stored = json.loads(paths.config.read_text())
    assert stored["settings"]["allow_duplicate_scans"] is True
    assert stored["preprocess_version"] == PREPROCESS_VERSION


def test_a_re_encoded_scan_is_warned_about_once(
    tiny_cohort: Path, runs: Path, tmp_path: Path, capsys
) -> None:
    manifest, original = bitmap_cohort(tiny_cohort, tmp_path / "b")
    flags = search_args(manifest, runs, "near")
    config, _, _ = configure(build_parser().parse_args(flags), flags)
    err = capsys.readouterr().err
    assert err.count("look nearly identical") == 1 and f"{original} ({original}.png) and JPEG" in err
    assert config.settings.allow_duplicate_scans is False


def test_a_study_of_another_preprocessing_version_is_not_resumed(
    tiny_cohort: Path, runs: Path, capsys
) -> None:
    for name, version in (("v1", 1), ("unrecorded", None)):  # a study from before the version was recorded: 1
        folder = _stored_study(runs, name, tiny_cohort, preprocess_version=version)
        before = sorted(p.name for p in folder.iterdir())
        assert main(search_args(tiny_cohort, runs, name, "--resume", "--budget", "1")) == 2  # 1: were it run
        err = capsys.readouterr().err
        assert (
            f"study {name!r} was made with preprocessing version 1, but this stagesearch preprocesses "
            f"scans with version {PREPROCESS_VERSION}"
            in err
            and "start a new study" in err
        )
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_the_winner_of_another_preprocessing_version_is_not_refitted(
    tiny_cohort: Path, runs: Path, capsys
) -> None:
    from search.commands.register import main as register

    folder = _stored_study(runs, "old", tiny_cohort, preprocess_version=1)
    study = optuna.create_study(
        study_name="old", storage=default_storage_url(StudyPaths(folder)), direction="maximize"
    )
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.8))  # a complete trial
    assert register(["--runs-dir", str(runs), "--study", "old"]) == 2
    err = capsys.readouterr().err
    assert "cannot refit study old: study 'old' was made with preprocessing version 1" in err
    assert "start a new study" in err and not (folder / "winner.json").exists()
