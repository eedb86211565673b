"""Candidates of several kinds: the batched AUC, the deep ensemble of each family's best, and the nested selection's
estimates."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from search.stats.candidates import (
    batched_auc,
    family_ensembles,
    mixture,
    prefer_simple,
    select,
)
from search.stats.candidates_text import difference_words


def test_batched_auc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    scores = np.round(rng.random((3, 5, 40)), 1)  # many ties
    weights = rng.integers(0, 3, (3, 1, 40)).astype(float)
    got = batched_auc(scores, y, weights)
    for i in range(3):
        for j in range(5):
            assert got[i, j] == pytest.approx(roc_auc_score(y, scores[i, j], sample_weight=weights[i, 0]))
    assert np.isnan(batched_auc(scores[0, 0], y, (y == 1).astype(float)))  # one class weighted


def test_family_ensemble_averages_the_two_best_of_each_family_and_beats_its_best_member() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    probs = np.clip(0.15 * y + rng.random((6, 80)), 0, None)  # weak, independent members
    families = ["a", "b", "a", "b", "a", "c"]
    aucs = np.array([roc_auc_score(y, p) for p in probs])
    counts = family_ensembles(aucs[None, :], families)[0]
    expected = np.zeros(6)
    for family in "abc":
        cols = [i for i, f in enumerate(families) if f == family]
        expected[sorted(cols, key=lambda i: -aucs[i])[:2]] = 1
    assert np.array_equal(counts, expected) and counts.sum() == 5
    ensemble = mixture(counts, probs)[0]
    assert np.allclose(ensemble, probs[counts == 1].mean(axis=0))
    assert roc_auc_score(y, ensemble) > max(roc_auc_score(y, p) for p in probs)
    # one row per weighting, NaN ranked last, ties to the earlier candidate
    many = family_ensembles([[0.5, np.nan, 0.7], [0.6, 0.6, 0.6]], ["a", "a", "a"], per_family=1)
    assert many.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_noise_ensemble_looks_good_but_the_whole_selection_is_not_shown_to_beat_chance() -> None:
    """Every candidate is noise: the ensemble built on all patients has a naive OOF AUC well above 0.6, while
    the corrected interval of the whole selection (ensemble built in-bag) contains 0.5."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 112)
    probs = rng.random((60, 112))
    kinds = ["single"] * 55 + ["radiomics"] * 5
    families = [f"f{i % 7}" for i in range(55)] + kinds[55:]
    result = select(probs, y, kinds, [True] * 60, families, n_resamples=300, seed=0)
    assert result.kinds["ensemble"].apparent > 0.6
    assert result.kinds["ensemble"].apparent >= result.kinds["single"].apparent
    assert result.ci[0] < 0.5 < result.ci[1]
    assert all(r.ci[0] < 0.5 < r.ci[1] for r in result.kinds.values())
    low, high = result.difference["ci"]
    assert low < 0 < high and difference_words(result.difference).startswith("no difference shown")
    assert result.used == 300 and result.unit == "patient"


def test_a_real_signal_is_found_and_the_simpler_kind_wins_ties() -> None:
    """Radiomics carries the signal, deep trials are noise: radiomics is registered, and the difference says so."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    deep = rng.random((20, 150))
    radiomics = np.clip(0.6 * y + rng.random((3, 150)), 0, None)
    result = select(
        np.vstack([deep, radiomics]),
        y,
        ["single"] * 20 + ["radiomics"] * 3,
        [True] * 23,
        [f"f{i % 7}" for i in range(23)],
        n_resamples=300,
    )
    assert result.registered == "radiomics"
    assert result.ci[0] > 0.5
    assert difference_words(result.difference).startswith("radiomics is better than deep learning by")
    assert np.array_equal(result.probs, np.vstack([deep, radiomics])[result.kinds["radiomics"].chosen])
    assert prefer_simple({"ensemble": 0.80, "single": 0.795, "radiomics": 0.70}) == "single"
    assert prefer_simple({"ensemble": 0.82, "single": 0.795}) == "ensemble"


def test_no_ensemble_without_two_complete_trials_and_units_resample_sites() -> None:
    rng = np.random.default_rng(4)
    y = np.tile([0, 1], 30)
    probs = rng.random((4, 60))
    sites = [f"s{i % 6}" for i in range(60)]
    result = select(probs, y, ["single"] * 4, [True, False, False, False], "abcd", sites, n_resamples=100)
    assert set(result.kinds) == {"single"} and result.difference is None
    assert result.unit == "site" and result.units == 6
    assert result.registered == "single"


def test_keep_best_keeps_the_members_within_its_disk_cap(tmp_path) -> None:
    """The best `per_family` complete trials of each family keep their fold models, fewer when they pass the cap
    (never the best)."""
    import json

    from search.study import StudyPaths
    from search.study.trial_models import keep_best

    paths = StudyPaths(tmp_path)
    for number, (cv_auc, family) in enumerate([(0.6, "a"), (0.9, "a"), (0.7, "a"), (0.8, "b"), (0.5, "b")]):
        folder = paths.models(number)
        folder.mkdir(parents=True)
        (folder / "fold_0.pt").write_bytes(b"\0" * 2**20)  # 1 MiB
        (folder / "trial.json").write_text(json.dumps({"cv_auc": cv_auc, "family": family}))
    paths.models(9).mkdir(parents=True)  # still being written: no trial.json
    assert keep_best(paths, per_family=2, cap_mb=100) == [0]  # a: 1 and 2; b: 3 and 4
    assert keep_best(paths, per_family=2, cap_mb=2.5) == [2, 4]  # best first: 1, 3 fit
    assert keep_best(paths, per_family=2, cap_mb=0.5) == [3]  # only the best
    assert sorted(p.name for p in paths.trials.iterdir() if (p / "models").is_dir()) == ["1", "9"]
