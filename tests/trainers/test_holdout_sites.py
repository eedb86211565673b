"""A hold-out grouped by site takes whole sites, stratified as far as the sites allow, or refuses saying why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainers.folds import HoldoutError, load_or_make_holdout, split_holdout


def _cohort(sites: dict[str, tuple[int, int]]) -> tuple[dict[str, int], dict[str, str]]:
    """Patients per site from (T1 count, T2 count)."""
    labels, where = {}, {}
    for site, (t1, t2) in sites.items():
        for i, label in enumerate([0] * t1 + [1] * t2):
            pid = f"{site}-{i:03d}"
            labels[pid], where[pid] = label, site
    return labels, where


SIX_SITES = {"A": (10, 8), "B": (6, 9), "C": (5, 5), "D": (12, 4), "E": (3, 6), "F": (7, 7)}


def _sides(held: list[str], where: dict[str, str]) -> tuple[set[str], set[str]]:
    held_sites = {where[p] for p in held}
    search_sites = {s for p, s in where.items() if p not in set(held)}
    return held_sites, search_sites


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_whole_sites_held_out_disjoint_and_both_classes(seed: int) -> None:
    labels, where = _cohort(SIX_SITES)
    held = split_holdout(labels, 0.2, seed, where, min_groups_left=3)
    held_sites, search_sites = _sides(held, where)
    assert held_sites and not held_sites & search_sites  # whole sites: no site on both sides
    assert held == sorted(p for p in labels if where[p] in held_sites)
    assert {labels[p] for p in held} == {0, 1}
    assert {labels[p] for p in labels if p not in held} == {0, 1}
    assert abs(len(held) / len(labels) - 0.2) < 0.06  # the subset nearest the fraction (C: 10 of 82, A: 18)
    assert split_holdout(labels, 0.2, seed, where, 3) == held  # seeded: the same split every time


def test_prefers_the_prevalence_of_the_cohort() -> None:
    # two sites of the same size: one near the cohort's prevalence, one of a single class; C is the only choice
    # that keeps both classes on both sides and the prevalence
    labels, where = _cohort({"A": (20, 20), "B": (18, 22), "C": (5, 5), "D": (0, 10), "E": (10, 0)})
    held = split_holdout(labels, 0.1, 0, where)
    assert {where[p] for p in held} == {"C"}


def test_many_sites_use_the_seeded_search() -> None:
    rng = np.random.default_rng(0)
    labels, where = _cohort(
        {f"s{i:02d}": (int(rng.integers(1, 6)), int(rng.integers(1, 6))) for i in range(30)}
    )
    held = split_holdout(labels, 0.25, 3, where, min_groups_left=5)
    held_sites, search_sites = _sides(held, where)
    assert not held_sites & search_sites
    assert abs(len(held) / len(labels) - 0.25) < 0.05
    assert split_holdout(labels, 0.25, 3, where, 5) == held


def test_too_few_sites_refused() -> None:
    labels, where = _cohort({"A": (5, 5), "B": (5, 5), "C": (5, 5)})
    with pytest.raises(HoldoutError, match=r"needs at least 4 sites .* has 3: A \(T1 5, T2 5\)"):
        split_holdout(labels, 0.2, 0, where, min_groups_left=3)


def test_every_choice_leaving_one_class_refused() -> None:
    # the T2 patients all sit at one site: holding it out leaves the search without T2, and any other site
    # held out has T1 only
    labels, where = _cohort({"A": (6, 0), "B": (5, 0), "C": (4, 9)})
    with pytest.raises(HoldoutError, match="no choice of whole sites leaves both classes"):
        split_holdout(labels, 0.3, 0, where)


def test_holdout_file_names_its_sites_and_is_reused(tmp_path: Path) -> None:
    labels, where = _cohort(SIX_SITES)
    path = tmp_path / "holdout.json"
    rename = {p: f"x-{p}" for p in labels}
    held = load_or_make_holdout(path, labels, 0.2, 0, "h", rename, where, 3)
    stored = json.loads(path.read_text())
    real = split_holdout(labels, 0.2, 0, where, 3)
    assert held == stored["patients"] == sorted(rename[p] for p in real)  # drawn on real ids, written renamed
    assert stored["sites"] == sorted({where[p] for p in real})
    assert stored["meta"]["group_by"] == "site"
    assert load_or_make_holdout(path, labels, 0.2, 0, "h", rename, where, 3) == held
    plain = tmp_path / "plain.json"
    # without sites: patient-level, as before, and no `sites` key
    load_or_make_holdout(plain, labels, 0.2, 0, "h")
    assert "sites" not in json.loads(plain.read_text())
    assert {where[p] for p in json.loads(plain.read_text())["patients"]} != set(stored["sites"])
