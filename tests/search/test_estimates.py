"""BBC-CV (`search.stats.estimates`) on synthetic out-of-fold tables: no training, seconds."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
from scipy.stats import norm

from search.stats.estimates import (
    bbc_cv,
    bootstrap_counts,
    corrected_fields,
    oof_matrix,
    parent_metrics,
    summary_lines,
    weighted_auc,
)
from search.study import Leaderboard, LeaderboardRow, StudyConfig, StudyPaths, StudySettings, write_oof
from search.study.pseudonyms import new_salt, pseudonyms, write_salt

N_PATIENTS, N_CONFIGS = 200, 100


def _labels() -> np.ndarray:
    return np.repeat([0, 1], N_PATIENTS // 2)


def _noise(seed: int = 0) -> np.ndarray:
    """100 configurations whose predictions ignore the label."""
    return np.random.default_rng(seed).random((N_CONFIGS, N_PATIENTS))


def _auc_08(labels: np.ndarray) -> np.ndarray:
    """One configuration of true AUC 0.8 (binormal, equal variances: separation sqrt(2) * Phi^-1(0.8)), drawn at
    the normal quantiles rather than at random, so its AUC on these 200 patients is the true one (0.80) and
    the test checks the estimator, not the luck of one draw."""
    d = np.sqrt(2) * norm.ppf(0.8)
    scores = np.empty(len(labels))
    for cls, shift in ((0, 0.0), (1, d)):
        idx = np.flatnonzero(labels == cls)
        scores[idx] = norm.ppf((np.arange(len(idx)) + 0.5) / len(idx)) + shift
        np.random.default_rng(5).shuffle(scores[idx])
    return scores


def _pairwise_auc(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    num = den = 0.0
    for i, j in itertools.product(np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        den += w[i] * w[j]
        num += w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den if den else float("nan")


def test_weighted_auc_counts_every_pair_with_ties_and_weights() -> None:
    rng = np.random.default_rng(1)
    for _ in range(10):
        y = rng.integers(0, 2, 15)
        scores = np.round(rng.random((3, 15)), 1)  # many ties
        weights = rng.integers(0, 3, (4, 15)).astype(float)
        want = [[_pairwise_auc(s, y, w) for s in scores] for w in weights]
        assert np.allclose(weighted_auc(scores, y, weights), want, equal_nan=True)


def test_pure_noise_best_is_optimistic_corrected_is_chance() -> None:
    y = _labels()
    result = bbc_cv(_noise(), y, seed=0)
    # the best of 100 noise AUCs on 200 patients is about 0.60 on average (SD of one AUC about 0.04); on this
    # seed it is above 0.6, the optimism the estimate must remove
    assert max(result.apparent) > 0.6
    assert result.mean == pytest.approx(0.5, abs=0.05)
    assert result.ci[0] < 0.5 < result.ci[1]
    assert result.used + result.skipped == 1000 and result.unit == "patient" and result.units == N_PATIENTS


def test_one_real_configuration_among_noise_is_found_and_scored() -> None:
    y = _labels()
    good = _auc_08(y)
    assert weighted_auc(good, y, np.ones((1, N_PATIENTS)))[0, 0] == pytest.approx(0.8, abs=0.005)
    result = bbc_cv(np.vstack([_noise(), good]), y, seed=0)
    assert result.mean == pytest.approx(0.8, abs=0.05)
    assert result.ci[0] > 0.5
    assert result.picks[-1] > 0.9 * result.used  # the selection finds it


def test_seeded() -> None:
    y = _labels()
    probs = _noise()[:20]
    assert bbc_cv(probs, y, seed=3) == bbc_cv(probs, y, seed=3)
    assert bbc_cv(probs, y, seed=3).mean != bbc_cv(probs, y, seed=4).mean


def test_sites_are_resampled_whole() -> None:
    sites = np.array(["a"] * 30 + ["b"] * 50 + ["c"] * 20 + ["d"] * 40)
    _, index = np.unique(sites, return_inverse=True)
    counts = bootstrap_counts(index, 500, np.random.default_rng(0))
    for site in "abcd":
        block = counts[:, sites == site]
        assert (block == block[:, :1]).all()  # every patient of a site is in or out together, as often
    assert (counts.reshape(500, -1)[:, [0, 30, 80, 100]].sum(axis=1) == 4).all()  # 4 sites drawn per resample

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, len(sites))
    result = bbc_cv(rng.random((5, len(sites))), y, list(sites), seed=0)
    assert result.unit == "site" and result.units == 4
    # with 4 sites, all 4 are drawn (nothing out of bag) in 4!/4^4 = 9% of resamples: those are skipped
    assert 50 < result.skipped < 140 and result.used + result.skipped == 1000


def _write(paths: StudyPaths, number: int, table: dict[str, tuple[int, float]]) -> None:
    rows = [{"patient_id": p, "label": y, "prob": s, "fold": 0} for p, (y, s) in table.items()]
    write_oof(paths.oof(number), rows, epoch=3)


def test_tables_aligned_by_patient_and_broken_ones_excluded(tmp_path) -> None:
    paths = StudyPaths(tmp_path / "study")
    patients = {f"p{i}": (i % 2, i / 10) for i in range(8)}
    _write(paths, 0, patients)
    _write(paths, 2, dict(reversed(list(patients.items()))))  # other row order: aligned by patient_id
    _write(paths, 3, {**patients, "p9": (1, 0.3)})  # an extra patient
    _write(paths, 4, {**patients, "p0": (1, 0.0)})  # another label
    table = oof_matrix(paths, [0, 1, 2, 3, 4])  # trial 1 has no table
    assert table.trials == [0, 2] and table.patients == sorted(patients)
    assert np.array_equal(table.probs[0], table.probs[1])
    assert [e["trial"] for e in table.excluded] == [1, 3, 4]
    assert "no out-of-fold table" in table.excluded[0]["why"] and "other patients" in table.excluded[1]["why"]

    config = StudyConfig("study", StudySettings(cv_group="patient", seed=0))
    fields = corrected_fields(paths, config, [0, 1, 2, 3, 4], best_cv_auc=0.75, n_resamples=200)
    about = fields["corrected"]
    assert about["configurations"] == 2 and about["trials"] == [0, 2] and about["n_resamples"] == 200
    assert [e["trial"] for e in about["excluded"]] == [1, 3, 4] and about["best_cv_auc"] == 0.75
    assert 0 <= fields["corrected_auc"] <= 1 and len(fields["corrected_auc_ci"]) == 2
    assert about["beats_chance"] == (fields["corrected_auc_ci"][0] > 0.5)


def test_sites_come_from_the_study_manifest(tiny_cohort, tmp_path) -> None:
    """Sites as the study's manifest gives them; a manifest of four mixed-label sites over the tiny cohort's
    scans (the tiny cohort's own sites are each of one class but one, so no resample of them scores)."""
    with tiny_cohort.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    manifest = tmp_path / "sites.csv"
    with manifest.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["patient_id", "image", "mask", "label", "site"])
        for i, r in enumerate(rows):
            out.writerow(
                [
                    r["patient_id"],
                    tiny_cohort.parent / r["image"],
                    "",
                    "T2" if (i // 4) % 2 else "T1",
                    f"s{i % 4}",
                ]
            )
    paths = StudyPaths(tmp_path / "study")
    rng = np.random.default_rng(0)
    for n in range(3):
        _write(paths, n, {r["patient_id"]: ((i // 4) % 2, float(rng.random())) for i, r in enumerate(rows)})
    config = StudyConfig(
        "study", StudySettings(folds=3, cv_group="site", seed=0), manifest_path=str(manifest)
    )
    about = corrected_fields(paths, config, [0, 1, 2], best_cv_auc=None)["corrected"]
    assert "error" not in about, about.get("error")
    assert about["unit"] == "site" and about["units"] == 4
    assert about["skipped"] > 0  # resamples that drew all four sites leave nothing out of bag

    # a pseudonymised study's tables name patients by pseudonym: its sites are looked up under them
    salt = new_salt()
    write_salt(paths, salt)
    names = pseudonyms(salt, [r["patient_id"] for r in rows])
    for n in range(3):
        _write(
            paths,
            n,
            {names[r["patient_id"]]: ((i // 4) % 2, float(rng.random())) for i, r in enumerate(rows)},
        )
    config.settings.pseudonymise = True
    fields = corrected_fields(paths, config, [0, 1, 2], best_cv_auc=None)
    assert fields["corrected"]["units"] == 4 and fields["corrected_auc"] is not None

    (
        tmp_path / "sites.csv"
    ).unlink()  # the manifest gone: the estimate says why instead of failing the search
    fields = corrected_fields(paths, config, [0, 1, 2], best_cv_auc=None)
    assert fields["corrected_auc"] is None and "manifest" in fields["corrected"]["error"]


def _board(ci: list[float] | None, beats: bool = False) -> Leaderboard:
    row = LeaderboardRow("Tiny", "tiny_cnn", 3, 0.81, {}, {}, False, "trials/3/oof.csv")
    about = {
        "configurations": 24,
        "best_cv_auc": 0.81,
        "used": 998,
        "unit": "patient",
        "excluded": [],
        "beats_chance": beats,
    }
    return Leaderboard(
        "s",
        {},
        [row],
        corrected_auc=sum(ci) / 2 if ci else None,
        corrected_auc_ci=ci,
        corrected=about if ci else None,
    )


def test_the_whole_selection_is_quoted_when_the_study_compared_kinds() -> None:
    board = _board([0.63, 0.80], beats=True)
    single = next(line for line in summary_lines(board, None) if line.startswith("corrected estimate"))
    assert single.endswith("<- quote this")
    compared = Leaderboard(
        "s",
        {},
        board.rows,
        corrected_auc=board.corrected_auc,
        corrected_auc_ci=board.corrected_auc_ci,
        corrected=board.corrected,
        candidates={"selection": {"corrected_auc": 0.74, "corrected_auc_ci": [0.62, 0.85]}},
    )
    assert not any("quote this" in line for line in summary_lines(compared, None))


def test_summary_says_which_number_to_quote_and_when_chance_is_not_excluded() -> None:
    good = "\n".join(summary_lines(_board([0.63, 0.80], beats=True), None))
    assert "best cv_auc 0.810 (optimistic: the best of 24 trials" in good
    assert "corrected estimate 0.715 (95% CI 0.630-0.800" in good and "<- quote this" in good
    assert "beats chance" not in good
    assert parent_metrics(_board([0.63, 0.80], True)) == pytest.approx(
        {"corrected_auc": 0.715, "corrected_auc_ci_low": 0.63, "corrected_auc_ci_high": 0.80}
    )

    chance = "\n".join(summary_lines(_board([0.38, 0.66]), {"model_uri": "m"}))
    assert "could not show that the winner beats chance" in chance and "(0.380-0.660) includes 0.5" in chance
    assert "registered for inspection only" in chance

    held = {"holdout": {"auc": 0.6, "ci_low": 0.3, "ci_high": 0.9}}
    lines = summary_lines(_board([0.63, 0.80], beats=True), held)
    assert "beats chance: its held-out 95% CI (0.300-0.900) includes 0.5" in lines[-1]
    assert summary_lines(_board(None), None) == [] and parent_metrics(_board(None)) == {}

    board = _board([0.63, 0.80], beats=True)
    board.corrected["excluded"] = [{"trial": n, "why": "no out-of-fold table"} for n in range(7)]
    left_out = summary_lines(board, None)[2]
    assert (
        left_out.startswith("  (left out of it: trial 0: no out-of-fold table;") and "trial 5" not in left_out
    )
    assert left_out.endswith("; 2 more in leaderboard.json)")
