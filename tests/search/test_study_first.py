"""The study's comparison, always: every family's study point first and run to the end, a fair per-family mode,
budgets too small refused, and a leaderboard that accounts for every family of the space."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import optuna
import pytest
import ray

from search.commands.run import main
from search.study import COMPARISON_ATTR, StudyPaths, format_missing, missing_families, read_leaderboard
from search.tune.driver import comparison_points
from search.tune.tuning import ComparisonASHA
from spaces import get_space
from tests.search.conftest import load_study, search_args
from trainers.backbones import family_of

COMPLETE = optuna.trial.TrialState.COMPLETE


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_comparison_points_study_first_then_per_family_in_turns() -> None:
    space = get_space("tiny")
    assert comparison_points(space, True, 0) == space.study_points()
    assert comparison_points(space, False, 0) == []
    both = comparison_points(space, True, 3)
    assert both[:2] == space.study_points()
    assert both[2:] == [{"backbone": "tiny_cnn"}, {"backbone": "resnet10t"}] * 2
    assert comparison_points(space, False, 2) == [{"backbone": "tiny_cnn"}, {"backbone": "resnet10t"}] * 2


class _Trial:
    def __init__(self, trial_id: str, comparison: bool) -> None:
        self.trial_id, self.config = trial_id, {COMPARISON_ATTR: True} if comparison else {}


def test_asha_never_stops_a_comparison_trial_before_its_last_epoch_but_counts_it() -> None:
    asha = ComparisonASHA(
        time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2
    )
    good, study, bad = _Trial("a", False), _Trial("b", True), _Trial("c", False)
    for t in (good, study, bad):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {"training_iteration": 1, "m": 0.9}) == "CONTINUE"
    # below the rung's cutoff: a comparison trial goes on, another is stopped
    assert asha.on_trial_result(None, study, {"training_iteration": 1, "m": 0.1}) == "CONTINUE"
    assert asha.on_trial_result(None, bad, {"training_iteration": 1, "m": 0.2}) == "STOP"
    assert asha.on_trial_result(None, study, {"training_iteration": 4, "m": 0.5}) == "STOP"  # its end


def test_a_budget_too_small_for_the_comparison_is_refused_before_anything(tiny_cohort, runs, capsys) -> None:
    assert main(search_args(tiny_cohort, runs, "small", "--budget", "1")) == 2
    err = capsys.readouterr().err
    assert "--budget 1 cannot hold the study's comparison" in err and "--no-study-first" in err
    assert main(search_args(tiny_cohort, runs, "small", "--budget", "3", "--per-family", "2")) == 2
    assert "--per-family 2 needs 4 trials (2 for each of the 2 backbone families" in capsys.readouterr().err
    assert not (runs / "small").exists()


def _trials_per_family(runs: Path, study: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in load_study(runs, study).get_trials():
        out.setdefault(family_of(t.params.get("backbone") or t.user_attrs["config"]["backbone"]), []).append(
            t
        )
    return out


@pytest.mark.slow
def test_per_family_2_gives_every_family_two_complete_trials(tiny_cohort, runs) -> None:
    args = search_args(
        tiny_cohort,
        runs,
        "fair",
        "--per-family",
        "2",
        "--budget",
        "6",
        "--max-epochs",
        "3",
        "--reduction-factor",
        "2",
        "--cpus-per-trial",
        "1",
        "--no-register",
    )
    assert main(args) == 0
    trials = load_study(runs, "fair").get_trials()
    assert len(trials) == 6
    comparison = [t for t in trials if t.user_attrs.get(COMPARISON_ATTR)]
    assert [t.number for t in comparison] == [0, 1, 2, 3]
    assert all(t.state == COMPLETE and sorted(t.intermediate_values) == [1, 2, 3] for t in comparison)
    for fam, mine in _trials_per_family(runs, "fair").items():
        assert sum(t.state == COMPLETE for t in mine) >= 2, fam
    board = read_leaderboard(StudyPaths(runs / "fair"))
    assert {r.family for r in board.rows} == {family_of(b) for b in get_space("tiny").backbones}
    assert board.missing == []
    sessions = json.loads((runs / "fair" / "config.json").read_text())["sessions"]
    assert sessions[0]["search"]["study_first"] is True and sessions[0]["search"]["per_family"] == 2


def _permuted(manifest: Path, out: Path) -> Path:
    rows = list(csv.DictReader(manifest.open()))
    labels = [r["label"] for r in rows]
    random.Random(7).shuffle(labels)
    out.mkdir()
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r, lab in zip(rows, labels, strict=True):
            w.writerow(
                {
                    **r,
                    "label": lab,
                    "image": str(manifest.parent / r["image"]),
                    "mask": str(manifest.parent / r["mask"]) if r.get("mask") else "",
                }
            )
    return out / "manifest.csv"


@pytest.mark.slow
def test_every_family_of_the_cpu_space_completes_on_permuted_labels(tiny_cohort, runs, tmp_path) -> None:
    """Noise everywhere, so early stopping would keep whichever family's first epoch happened to look best:
    the comparison still trains every family of the cpu space to its last epoch."""
    manifest = _permuted(tiny_cohort, tmp_path / "permuted")
    args = [
        "--manifest",
        str(manifest),
        "--space",
        "cpu",
        "--folds",
        "3",
        "--runs-dir",
        str(runs),
        "--study",
        "noise",
        "--no-pretrained",
        "--budget",
        "9",
        "--max-epochs",
        "2",
        "--reduction-factor",
        "2",
        "--cpus-per-trial",
        "1",
        "--no-register",
    ]
    assert main(args) == 0
    space = get_space("cpu")
    per_family = _trials_per_family(runs, "noise")
    assert set(per_family) == {family_of(b) for b in space.backbones}
    assert all(any(t.state == COMPLETE for t in mine) for mine in per_family.values())
    study = load_study(runs, "noise")
    assert missing_families(study, {b: family_of(b) for b in space.backbones}) == []


def test_a_family_without_a_complete_trial_is_listed_with_why() -> None:
    study = optuna.create_study()
    dist = {"backbone": optuna.distributions.CategoricalDistribution(["a1", "b1", "c1"])}
    for backbone, state in (
        ("a1", COMPLETE),
        ("b1", optuna.trial.TrialState.PRUNED),
        ("b1", optuna.trial.TrialState.FAIL),
    ):
        study.add_trial(
            optuna.trial.create_trial(
                params={"backbone": backbone},
                distributions=dist,
                state=state,
                value=0.7 if state == COMPLETE else None,
                user_attrs={"fail_reason": "out_of_memory"} if state == optuna.trial.TrialState.FAIL else {},
            )
        )
    missing = missing_families(study, {"a1": "A", "b1": "B", "c1": "C"})
    assert missing == [
        {
            "family": "B",
            "backbones": ["b1"],
            "why": "2 trial(s): 1 stopped early, 1 failed (out_of_memory 1)",
        },
        {"family": "C", "backbones": ["c1"], "why": "not tried"},
    ]
    assert format_missing(missing).splitlines()[1].startswith("B           no complete trial: 2 trial(s)")
