"""What registration records for the gate (search/registry/version_tags.py), read from a real leaderboard.json, and the
parse-time refusal of hold-outs too small to test anything (search/session/configure.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from search.registry.version_tags import beats_chance, chance_note, estimate_tags, operating_threshold
from search.session.configure import hanley_mcneil_half_width, holdout_problems
from search.study import Leaderboard, LeaderboardRow, StudyPaths, read_leaderboard, write_leaderboard
from tests.search.conftest import search_args


def _board(folder: Path, **estimates: object) -> Leaderboard:
    """Write a leaderboard.json whose winner is trial 4 (estimates as the BBC-CV part writes them), read it back."""
    paths = StudyPaths(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        LeaderboardRow("resnet", "resnet18", 4, 0.71, {"lr": 1e-3}, {}, False, "trials/4/oof.csv"),
        LeaderboardRow("densenet", "densenet121", 2, 0.66, {"lr": 1e-4}, {}, False, None),
    ]
    write_leaderboard(paths, Leaderboard("s", {"complete": 2}, rows, {}, **estimates))
    board = read_leaderboard(paths)
    assert board is not None
    return board


HELD_GOOD = {"auc": 0.83, "ci_low": 0.66, "ci_high": 0.95, "n_patients": 28}
HELD_WIDE = {"auc": 0.80, "ci_low": 0.45, "ci_high": 1.0, "n_patients": 8}


def test_estimate_tags_from_the_leaderboard(tmp_path: Path) -> None:
    honest = _board(
        tmp_path / "a",
        corrected_auc=0.64,
        corrected_auc_ci=[0.55, 0.73],
        corrected={"n_resamples": 1000, "unit": "patient", "beats_chance": True},
    )
    tags, notes = estimate_tags(honest, 4, None)
    assert (
        tags
        == {
            "corrected_auc": "0.6400",
            "corrected_auc_ci_low": "0.5500",
            "corrected_auc_ci_high": "0.7300",
            "beats_chance": "true",
            "estimate": "corrected_cv",
        }
        and notes == []
    )
    assert estimate_tags(honest, 4, HELD_GOOD)[0]["estimate"] == "holdout"
    assert estimate_tags(honest, 4, HELD_WIDE)[0]["beats_chance"] == "false"  # the hold-out CI includes 0.5
    assert estimate_tags(honest, 4, dict(HELD_GOOD, auc=float("nan")))[0]["estimate"] == "corrected_cv"

    chance = _board(
        tmp_path / "b", corrected_auc=0.52, corrected_auc_ci=[0.41, 0.63], corrected={"beats_chance": False}
    )
    tags, _ = estimate_tags(chance, 4, HELD_GOOD)
    assert tags["beats_chance"] == "false" and tags["estimate"] == "holdout"
    note = chance_note(
        {**tags, "holdout_auc": "0.8300", "holdout_auc_ci_low": "0.6600", "holdout_auc_ci_high": "0.9500"}
    )
    assert note and note.startswith(
        "the search could not show that this model beats chance (corrected AUC 0.5200 "
        "[0.4100, 0.6300] includes 0.5): it is registered"
    )
    below = {**tags, "holdout_auc": "0.3000", "holdout_auc_ci_low": "0.1000", "holdout_auc_ci_high": "0.4500"}
    assert "; hold-out AUC 0.3000 [0.1000, 0.4500] lies below 0.5)" in chance_note(below)

    tags, notes = estimate_tags(honest, 2, None)  # --trial 2 is not the search's winner: no corrected tags
    assert tags == {"beats_chance": "unknown", "estimate": "cv"}
    assert notes == [
        "the corrected estimate is of the search's winner, trial 4, not of trial 2: not recorded on "
        "this version"
    ]

    before = _board(
        tmp_path / "c"
    )  # before the corrected estimate exists: the hold-out decides, else unknown
    assert estimate_tags(before, 4, HELD_GOOD)[0] == {"beats_chance": "true", "estimate": "holdout"}
    assert estimate_tags(before, 4, HELD_WIDE)[0]["beats_chance"] == "false"
    assert estimate_tags(before, 4, None)[0] == {"beats_chance": "unknown", "estimate": "cv"}
    assert estimate_tags(None, 4, None)[0] == {"beats_chance": "unknown", "estimate": "cv"}
    assert json.loads((tmp_path / "a" / "leaderboard.json").read_text())["corrected_auc"] == 0.64


def test_beats_chance_rules() -> None:
    assert beats_chance(None, [0.51, 0.7], None) == "true"  # no verdict given: the interval's low end decides
    assert beats_chance(None, [0.5, 0.7], None) == "false"  # an interval that includes 0.5
    assert beats_chance(None, [0.2, 0.45], None) == "false"  # one below chance is no better
    assert beats_chance(True, [0.4, 0.7], None) == "true"  # the corrected estimate's own verdict wins
    assert beats_chance(True, None, [0.3, 0.9]) == "false"  # a hold-out CI with 0.5 in it always says no
    assert beats_chance(None, None, [float("nan"), float("nan")]) == "unknown"


def _oof(labels: np.ndarray, probs: np.ndarray) -> list[dict]:
    return [
        {"patient_id": f"p{i}", "label": int(y), "prob": float(p), "fold": i % 3}
        for i, (y, p) in enumerate(zip(labels, probs, strict=True))
    ]


def test_operating_threshold_is_youden_on_the_oof_predictions() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    squeezed = 0.46 + 0.02 * y + 0.004 * rng.standard_normal(100)  # good ranking, every P(T2) below 0.5
    cut, rule = operating_threshold(_oof(y, squeezed))
    assert 0.46 < cut < 0.49 and rule.startswith("youden_oof (J ")
    staged = squeezed >= cut
    assert staged[y == 1].mean() > 0.8 and staged[y == 0].mean() < 0.2  # at 0.5 every patient would be T1
    assert not (squeezed >= 0.5).any()
    assert operating_threshold(_oof(np.zeros(10), rng.random(10))) == (
        0.5,
        "0.5 (the out-of-fold table has a single class)",
    )
    backwards = 1.0 - y * 0.5  # worse than chance: no useful cut
    assert operating_threshold(_oof(y, backwards))[0] == 0.5


def test_hanley_mcneil_half_width() -> None:
    assert hanley_mcneil_half_width(10, 10) == pytest.approx(0.219, abs=1e-3)
    widths = [hanley_mcneil_half_width(n, n) for n in (2, 5, 10, 20, 50)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.1


def test_small_holdout_refused_at_parse_time(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.commands.run import main
    from trainers.manifest import load_manifest

    runs = tmp_path / "runs"
    assert (
        main(
            search_args(tiny_cohort, runs, "small", "--holdout", "0.25", "--budget", "2", "--max-epochs", "1")
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--holdout 0.25: the hold-out would have T1 " in err and "fewer than 10 of a class" in err
    assert "95% CI would be about +/-0." in err and "Hanley-McNeil SE at AUC 0.75" in err
    assert "--force-small-holdout" in err
    assert not (runs / "small").exists()  # refused before anything is written

    cohort = load_manifest(tiny_cohort, folds=3)
    assert holdout_problems(cohort, 0.25, 3, 0, force_small=True) == []
    assert "warning: --holdout 0.25: the hold-out would have" in capsys.readouterr().out
