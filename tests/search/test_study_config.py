"""The typed study config: today's config.json read and written unchanged, older ones read with their defaults."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest

from search.session.options import build_parser, resolve_settings
from search.study import (
    FORMAT_VERSION,
    StudyConfig,
    StudyFormatError,
    StudyPaths,
    StudySettings,
    load_config,
    read_config,
    write_config,
)

#: A config.json as `stagesearch run --budget 200 --seed 2` wrote it before the config was typed (format 2;
#: its folders' paths shortened).
BEFORE_TYPED = {
    "format": 2,
    "study": "cpu-20261204-012127",
    "settings": {
        "space": "cpu",
        "backbones": [
            "densenet_small",
            "fbnetc_050",
            "hrnet_w18_small",
            "regnetx_002",
            "resnet10t",
            "shufflenet_v2_x1_0",
            "vit_tiny_patch16_224",
        ],
        "resolutions": [32],
        "manifest": None,
        "phantom_patients": 112,
        "folds": 5,
        "cv_group": "patient",
        "max_epochs": 8,
        "holdout": 0.0,
        "seed": 2,
        "pretrained": True,
        "pseudonymise": False,
        "allow_duplicate_scans": False,
    },
    "manifest_path": "/cache/phantom-a7fdcb59cea9/manifest.csv",
    "cohort_hash": "82276f845ef08b80",
    "preprocess_version": 2,
    "patients": 112,
    "storage": "sqlite:////runs/cpu-20261204-012127/optuna.db",
    "tracking_uri": "sqlite:////runs/mlflow.db",
    "sessions": [
        {
            "argv": ["--budget", "200", "--seed", "2", "--runs-dir", "runs"],
            "started": "2026-12-04T01:21:27",
            "software": {"python": "3.11.7", "stagesearch": "0.1.0", "optuna": "5.0.0", "ray": "2.60.0"},
            "search": {"budget": 200, "sampler": "tpe", "scheduler": "asha", "study_first": True},
        }
    ],
}


def _folder(tmp_path: Path, document: dict) -> StudyPaths:
    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir()
    paths.config.write_text(json.dumps(document))
    return paths


def test_todays_config_is_read_and_written_unchanged(tmp_path: Path) -> None:
    paths = _folder(tmp_path, BEFORE_TYPED)
    config = load_config(paths)
    assert config.format == FORMAT_VERSION and config.study == "cpu-20261204-012127"
    assert config.settings.seed == 2 and config.settings.backbones[2] == "hrnet_w18_small"
    assert config.settings.manifest is None and config.preprocess_version == 2
    write_config(paths, config)
    assert json.loads(paths.config.read_text()) == BEFORE_TYPED  # no key added, lost or changed


def test_keys_this_version_does_not_know_survive_a_rewrite(tmp_path: Path) -> None:
    document = copy.deepcopy(BEFORE_TYPED)
    document["site_note"] = {"by": "a later stagesearch"}
    document["settings"]["slab_mm"] = 5
    paths = _folder(tmp_path, document)
    config = load_config(paths)
    assert config.extra == {"site_note": {"by": "a later stagesearch"}} and config.settings.extra == {
        "slab_mm": 5
    }
    write_config(paths, config)
    assert json.loads(paths.config.read_text()) == document


def test_an_older_config_reads_with_the_defaults_of_what_it_did_not_record(tmp_path: Path) -> None:
    """Format 1: no format, no study name, no preprocessing version, settings from before several flags."""
    older = {
        "settings": {"space": "cpu", "folds": 5, "seed": 0, "max_epochs": 8},
        "manifest_path": "cohort.csv",
        "cohort_hash": "0" * 16,
    }
    config = load_config(_folder(tmp_path, older))
    assert config.format == 1 and config.study == "study" and config.preprocess_version == 1
    assert config.settings.pseudonymise is False and config.settings.cv_group == "patient"
    assert config.settings.backbones is None and config.upgraded_from_format is None
    assert "upgraded_from_format" not in config.to_json() and "pseudonym_salt_check" not in config.to_json()


def test_load_refuses_what_it_cannot_continue_and_read_takes_what_is_there(tmp_path: Path) -> None:
    with pytest.raises(StudyFormatError, match="not a study folder"):
        load_config(StudyPaths(tmp_path / "none"))
    blank = read_config(StudyPaths(tmp_path / "none"))  # for display: a blank config of the folder's name
    assert blank.study == "none" and blank.format == 1 and blank.storage is None
    newer = _folder(tmp_path, {**BEFORE_TYPED, "format": FORMAT_VERSION + 1})
    with pytest.raises(StudyFormatError, match="newer than this stagesearch"):
        load_config(newer)
    assert read_config(newer).format == FORMAT_VERSION + 1


def _cli(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(list(flags))


def test_settings_come_from_the_stored_study_then_the_flags_then_the_defaults() -> None:
    fresh, problems = resolve_settings(_cli("--seed", "3", "--folds", "4"), None)
    assert not problems and fresh == StudySettings(seed=3, folds=4)
    stored = StudySettings.from_json(BEFORE_TYPED["settings"])
    kept, problems = resolve_settings(_cli(), stored)
    assert not problems and kept == stored
    _, problems = resolve_settings(_cli("--seed", "3"), stored)
    assert problems == ["--seed 3 conflicts with this study's 2 (start a new --study)"]
    # a setting an older study did not record is its default, so a flag cannot change the study's grouping
    older = StudySettings.from_json({"space": "cpu", "seed": 0})
    _, problems = resolve_settings(_cli("--cv-group", "site"), older)
    assert problems == ["--cv-group site conflicts with this study's patient (start a new --study)"]


def test_the_settings_defaults_are_the_dataclass_fields() -> None:
    assert StudySettings.names()[0] == "space" and "extra" not in StudySettings.names()
    assert StudySettings.defaults()["phantom_patients"] == 112
    assert StudyConfig("x").settings == StudySettings()
