"""The search simulator on a small synthetic table: study-first, the scheduler's stops, budgets, pairing, selection.

The table's rows are made up here (curves with a known order), so the test can say what each policy must do; the
simulator's parts are the real ones (Optuna's samplers, Ray's ASHA class, the space's define-by-run function).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import simulate, table_rows
from bench.table_design import design, plan
from spaces import get_space


def _fake_table(folder: Path, per_family: int = 4) -> Path:
    """Rows of the cpu space's design whose quality rises with lr (cv and independent AUC agree), 8 epochs."""
    space = get_space("cpu")
    runs = plan(design(space, per_family), extra_seeds_per_family=1)
    folder.mkdir(parents=True, exist_ok=True)
    header = {"space": "cpu", "max_epochs": 8, "runs": [r.key for r in runs]}
    (folder / "table.json").write_text(json.dumps(header))
    lines = []
    for r in runs:
        quality = 0.55 + 0.3 * (np.log10(r.config.lr) + 5) / 2.5 + 0.01 * r.seed
        epochs = [
            {
                "epoch": e,
                "fold_auc": [quality * (0.6 + 0.05 * e)] * 5,
                "mean_fold_auc": quality * (0.6 + 0.05 * e),
                "cv_auc": quality * (0.6 + 0.05 * e),
                "seconds": 10.0,
                **({"indep_auc": quality - 0.05} if e in (1, 8) else {}),
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
                }
            )
        )
    (folder / "runs-0.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> table_rows.Table:
    return table_rows.load_table(_fake_table(tmp_path_factory.mktemp("table")))


def test_study_first_runs_the_seven_study_points_to_the_end(fake: table_rows.Table) -> None:
    finished = simulate.simulate(fake, simulate.POLICIES["sf_tpe_asha"], seed=3, budget_s=3600)
    study = [f for f in finished if f.exempt]
    assert sorted(f.row.config_id for f in study) == sorted(fake.study_ids())
    assert all(f.complete and f.epochs == 8 for f in study)
    stopped = [f for f in finished if not f.complete]
    assert stopped and all(f.epochs < 8 for f in stopped)  # ASHA stopped some of the rest
    assert all(f.ended_at <= 3600 for f in finished)


def test_seven_alone_and_fifo(fake: table_rows.Table) -> None:
    seven = simulate.simulate(fake, simulate.POLICIES["seven"], seed=0, budget_s=1e9)
    assert len(seven) == 7 and all(f.complete for f in seven)
    pick = simulate.select(seven, "best_cv", 1e9)
    assert pick is not None and pick.row.cv_auc[-1] == max(f.row.cv_auc[-1] for f in seven)
    fifo = simulate.simulate(fake, simulate.POLICIES["random_fifo"], seed=0, budget_s=1200)
    assert fifo and all(f.complete for f in fifo)
    # two workers, 8 epochs of 10 s plus 2 s to start: about 2 x 1200 / 82 trials
    assert 24 <= len(fifo) <= 30


def test_without_study_first_the_default_stops_trials_early(fake: table_rows.Table) -> None:
    finished = simulate.simulate(fake, simulate.POLICIES["default"], seed=1, budget_s=3600)
    assert not any(f.exempt for f in finished)
    stopped = [f for f in finished if not f.complete]
    assert stopped and {f.epochs for f in stopped} <= {1, 2, 3, 4, 5, 6, 7}
    # ASHA (grace 1, factor 3) decides at epochs 1 and 3 only: a trial stopped ends right after one of them
    assert {f.epochs for f in stopped} <= {1, 3}


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
    policies = [simulate.POLICIES["sf_tpe_asha"], simulate.POLICIES["seven"]]
    results = simulate.run_policies(
        fake, policies, seeds=[0, 1], budgets_min=[5, 20], workers=2, clock="family"
    )
    rows = simulate.summarise(fake, results, [0, 1], [5, 20])
    by = {(r["policy"], r["budget min"]): r for r in rows}
    assert by[("seven", 20)]["P(> seven)"] == 0.0  # never above itself
    assert by[("sf_tpe_asha", 20)]["median indep"] >= by[("seven", 20)]["median indep"]
    assert by[("sf_tpe_asha", 5)]["fold-epochs"] <= by[("sf_tpe_asha", 20)]["fold-epochs"]
