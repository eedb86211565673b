"""The search simulator on a small synthetic table: study-first, the scheduler's stops, budgets, pairing, selection.

The table's rows are made up here (curves with a known order), so the test can say what each policy must do; the
simulator's parts are the real ones (Optuna's samplers, Ray's ASHA class, the space's define-by-run function).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench import simulate, simulate_pick, table_rows
from bench.table_design import design, plan
from spaces import get_space


def _fake_table(folder: Path, per_family: int = 4) -> Path:
    """Rows of the cpu space's design whose quality rises with lr (cv and independent AUC agree), 8 epochs."""
    space = get_space("cpu")
    runs = plan(design(space, per_family), extra_seeds_per_family=1)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    oof_labels, indep_labels = rng.integers(0, 2, 40), rng.integers(0, 2, 60)
    header = {
        "space": "cpu",
        "max_epochs": 8,
        "runs": [r.key for r in runs],
        "oof_labels": oof_labels.tolist(),
        "indep_labels": indep_labels.tolist(),
    }
    (folder / "table.json").write_text(json.dumps(header))
    lines = []
    for r in runs:
        quality = 0.55 + 0.3 * (np.log10(r.config.lr) + 5) / 2.5 + 0.01 * r.seed
        oof = (quality * oof_labels + rng.normal(0, 0.5, 40)).round(4).tolist()  # better rows separate more
        epochs = [
            {
                "epoch": e,
                "fold_auc": [quality * (0.6 + 0.05 * e)] * 5,
                "mean_fold_auc": quality * (0.6 + 0.05 * e),
                "cv_auc": quality * (0.6 + 0.05 * e),
                "seconds": 10.0,
                **({"indep_auc": quality - 0.05} if e in (1, 8) else {}),
                "oof": oof,
            }
            for e in range(1, 9)
        ]
        lines.append(
            json.dumps(
                {
                    "key": r.key,
                    "config_id": r.config.config_id,
                    "seed": r.seed,
                    "params": r.config.params(),
                    "setup_seconds": 1.0,
                    "epochs": epochs,
                    "indep_probs": (quality * indep_labels + rng.normal(0, 0.5, 60)).round(4).tolist(),
                }
            )
        )
    (folder / "runs-0.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> table_rows.Table:
    return table_rows.load_table(_fake_table(tmp_path_factory.mktemp("table")))


def test_study_first_runs_the_seven_study_points_to_the_end(fake: table_rows.Table) -> None:
    finished = simulate.simulate(fake, simulate.POLICIES["default"], seed=3, budget_s=3600)
    study = [f for f in finished if f.exempt]
    assert sorted(f.row.config_id for f in study) == sorted(fake.study_ids())
    assert all(f.complete and f.epochs == 8 for f in study)
    stopped = [f for f in finished if not f.complete]
    assert stopped and all(f.epochs < 8 for f in stopped)  # ASHA stopped some of the rest
    assert all(f.ended_at <= 3600 for f in finished)


def test_seven_alone_and_fifo(fake: table_rows.Table) -> None:
    seven = simulate.simulate(fake, simulate.POLICIES["seven"], seed=0, budget_s=1e9)
    assert len(seven) == 7 and all(f.complete for f in seven)
    pick = simulate_pick.select(seven, "best_cv", 1e9)
    assert pick is not None and pick.row.cv_auc[-1] == max(f.row.cv_auc[-1] for f in seven)
    fifo = simulate.simulate(fake, simulate.POLICIES["random_fifo"], seed=0, budget_s=1200)
    assert fifo and all(f.complete for f in fifo)
    # two workers, 8 epochs of 10 s plus 2 s to start: about 2 x 1200 / 82 trials
    assert 24 <= len(fifo) <= 30


def test_without_study_first_asha_stops_trials_early(fake: table_rows.Table) -> None:
    finished = simulate.simulate(fake, simulate.POLICIES["no_study_first"], seed=1, budget_s=3600)
    assert not any(f.exempt for f in finished)
    stopped = [f for f in finished if not f.complete]
    assert stopped and {f.epochs for f in stopped} <= {1, 2, 3, 4, 5, 6, 7}
    # ASHA (grace 1, factor 3) decides at epochs 1 and 3 only: a trial stopped ends right after one of them
    assert {f.epochs for f in stopped} <= {1, 3}


def test_the_default_policy_is_what_stagesearch_run_does_with_no_flag() -> None:
    from search.session.options import build_parser
    from search.tune.tuning import startup_trials

    args = build_parser().parse_args([])
    default = simulate.POLICIES["default"]
    assert (default.sampler, default.scheduler) == (args.sampler, args.scheduler)
    assert (default.grace, default.reduction) == (args.grace_epochs, args.reduction_factor)
    assert default.study_first == args.study_first and not default.only_study
    assert args.register_kind == "auto" and default.selection == "registered"
    assert (
        default.startup == startup_trials(args.budget) and default.brackets == 1 and not default.constant_liar
    )


def test_registered_and_ensemble_picks_are_scored_on_the_independent_patients(fake: table_rows.Table) -> None:
    finished = simulate.simulate(fake, simulate.POLICIES["default"], seed=2, budget_s=1e9, max_trials=12)
    complete = [f for f in finished if f.complete]
    single = simulate_pick.pick_auc(fake, finished, "best_cv", 1e9, 2)
    assert single == simulate_pick.select(finished, "best_cv", 1e9).row.indep_auc[8]
    ensemble = simulate_pick.pick_auc(fake, finished, "ensemble", 1e9, 2)
    registered = simulate_pick.pick_auc(fake, finished, "registered", 1e9, 2)
    labels = np.asarray(fake.header["indep_labels"])
    aucs = [roc_auc_score(labels, f.row.indep_probs) for f in complete]
    assert min(aucs) <= ensemble <= 1.0
    # the search's own choice: the ensemble, or the single trial with the best AUC of its out-of-fold table
    assert registered in (ensemble, *(f.row.indep_auc[8] for f in complete))
    assert simulate_pick.pick_auc(fake, finished, "registered", -1.0, 2) is None  # nothing complete yet


def test_seed_draw_is_paired_and_uses_every_seed() -> None:
    draws = {table_rows.seed_draw(s, "resnet10t-study", [0, 1]) for s in range(40)}
    assert draws == {0, 1}
    assert table_rows.seed_draw(7, "x", [0, 1]) == table_rows.seed_draw(7, "x", [1, 0])


def test_nearest_row_is_in_the_family_and_the_mapping_check_runs(fake: table_rows.Table) -> None:
    row = fake.rows["resnet10t-00"][0]
    assert table_rows.nearest(fake, row.params) == "resnet10t-00"
    assert table_rows.nearest(fake, row.params, exclude="resnet10t-00").startswith("resnet10t-")
    check = table_rows.check_mapping(fake)
    assert check["rows"] == 7 * 5 and check["nearest_mae_cv_auc"] >= 0


def test_policies_summarised_with_the_paired_reference(fake: table_rows.Table, tmp_path: Path) -> None:
    policies = [simulate.POLICIES["default"], simulate.POLICIES["seven"]]
    results = simulate.run_policies(fake, policies, seeds=[0, 1], budgets=[5, 20], workers=2, clock="family")
    rows = simulate.summarise(fake, results, [0, 1], [5, 20])
    by = {(r["policy"], r["budget"]): r for r in rows}
    assert by[("seven", 20)]["P(> seven)"] == 0.0  # never above itself
    assert by[("default", 20)]["median indep"] >= by[("seven", 20)]["median indep"]
    assert by[("default", 5)]["fold-epochs"] <= by[("default", 20)]["fold-epochs"]
    low, high = by[("default", 20)]["ci low"], by[("default", 20)]["ci high"]
    assert low <= by[("default", 20)]["median indep"] <= high


def test_a_fold_epoch_budget_stops_the_search_where_its_trials_trained_that_many(
    fake: table_rows.Table,
) -> None:
    """In fold-epochs, a budget is what the trials trained (a stopped trial its epochs), the seven included."""
    policies = [simulate.POLICIES["default"], simulate.POLICIES["seven"]]
    results = simulate.run_policies(
        fake, policies, seeds=[0], budgets=[200, 600], workers=2, clock="family", unit="fold-epochs"
    )
    assert results["fold_epochs"]["default"] == {"200": [200], "600": [600]}
    assert results["fold_epochs"]["seven"]["600"] == [7 * 8 * 5]  # the seven alone never spend more
    # 600 fold-epochs are 120 epochs of 10 s on 2 workers (and 2 s to start a trial): about 10 simulated minutes
    assert 10.0 <= results["minutes"]["default"]["600"][0] <= 11.0
    # by 40 epochs study-first has completed 4 study points (2 at a time), so it has a pick
    assert results["independent_auc"]["default"]["200"][0] is not None


def test_averaging_rules_weigh_their_members_equally(fake: table_rows.Table) -> None:
    """`topK`: the K best complete trials by cv_auc; `familiesK`: the K best of each family; `all`: every one."""
    finished = simulate.simulate(fake, simulate.POLICIES["default"], seed=4, budget_s=1e9, max_trials=20)
    complete = sorted((f for f in finished if f.complete), key=lambda f: -f.row.cv_auc[-1])
    labels = np.asarray(fake.header["indep_labels"])

    def mean_auc(members) -> float:
        return roc_auc_score(labels, np.mean([f.row.indep_probs for f in members], axis=0))

    assert simulate_pick.pick_auc(fake, finished, "top3", 1e9, 4) == pytest.approx(mean_auc(complete[:3]))
    assert simulate_pick.pick_auc(fake, finished, "all", 1e9, 4) == pytest.approx(mean_auc(complete))
    per_family: dict[str, list] = {}
    for f in complete:
        per_family.setdefault(f.row.backbone, []).append(f)
    two = [f for fs in per_family.values() for f in fs[:2]]
    assert len(per_family) == 7 and len(two) < len(complete)
    assert simulate_pick.pick_auc(fake, finished, "families2", 1e9, 4) == pytest.approx(mean_auc(two))
