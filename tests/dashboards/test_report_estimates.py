"""The report's corrected-estimate section, from a `leaderboard.json` written the way the search writes it."""

from __future__ import annotations

from pathlib import Path

from dashboards.report_estimates import estimates_section
from search.study import Leaderboard, LeaderboardRow, StudyPaths, write_json, write_leaderboard


def _write(
    paths: StudyPaths, ci: list[float] | None, candidates: dict | None = None, **about: object
) -> None:
    row = LeaderboardRow("Tiny", "tiny_cnn", 3, 0.81, {}, {}, False, "trials/3/oof.csv")
    corrected = {
        "method": "BBC-CV (Tsamardinos et al. 2018)",
        "n_resamples": 1000,
        "used": 990,
        "skipped": 10,
        "unit": "patient",
        "seed": 0,
        "configurations": 24,
        "best_cv_auc": 0.81,
        "excluded": [{"trial": 7, "why": "no out-of-fold table"}],
        **about,
    }
    write_leaderboard(
        paths,
        Leaderboard(
            "s",
            {},
            [row],
            corrected_auc=sum(ci) / 2 if ci else None,
            corrected_auc_ci=ci,
            corrected=corrected,
            candidates=candidates,
        ),
    )


def test_section_names_the_honest_number(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "s")
    _write(paths, [0.63, 0.80], beats_chance=True)
    page = estimates_section(paths)
    assert "Corrected estimate <b>0.715</b> (95% interval 0.630 to 0.800): <b>quote this</b>" in page
    assert "The best cv_auc, 0.810, is optimistic: it is the best of 24 trials" in page
    assert "trial 7: no out-of-fold table" in page and "beats chance" not in page


def test_section_points_to_the_whole_selection_when_the_study_compared_kinds(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "s")
    whole = {"selection": {"corrected_auc": 0.74, "corrected_auc_ci": [0.62, 0.85]}}
    _write(paths, [0.63, 0.80], candidates=whole, beats_chance=True)
    page = estimates_section(paths)
    assert "quote this" not in page and "the best single trial's. Quote the whole selection's" in page


def test_section_warns_when_chance_is_not_ruled_out(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "s")
    _write(paths, [0.38, 0.66], beats_chance=False)
    assert "could not show that the winner beats chance" in estimates_section(paths)
    _write(paths, [0.63, 0.80], beats_chance=True)
    write_json(paths.winner, {"holdout": {"auc": 0.6, "ci_low": 0.31, "ci_high": 0.9}})
    page = estimates_section(paths)
    assert (
        "could not show that the winner beats chance" in page and "held-out 95% CI (0.310 to 0.900)" in page
    )


def test_section_without_an_estimate(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "s")
    assert "No corrected estimate" in estimates_section(paths)
    _write(paths, None, error="no finished trial has an out-of-fold table")
    assert "No corrected estimate: no finished trial has an out-of-fold table." in estimates_section(paths)
