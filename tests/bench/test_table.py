"""The learning-curve table at toy size: what a run records, resuming, sharding, stale rows trained again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import table, table_design
from spaces import get_space

TINY = [
    "--space",
    "tiny",
    "--per-family",
    "2",
    "--extra-seeds",
    "1",
    "--patients",
    "16",
    "--indep-patients",
    "12",
    "--indep-seed",
    "5",
    "--eval-epochs",
    "1",
    "--backbones",
    "tiny_cnn",
]


def test_design_covers_every_family_with_its_study_point_inside_the_space() -> None:
    space = get_space("cpu")
    configs = table_design.design(space, per_family=21)
    assert len(configs) == 7 * 22
    study = [c for c in configs if c.study_point]
    assert sorted(c.backbone for c in study) == sorted(space.backbones)
    for c in configs:
        assert space.lr[0] <= c.lr <= space.lr[1] and 0 <= c.aug_strength <= 1
        assert space.weight_decay[0] <= c.weight_decay <= space.weight_decay[1]
    assert table_design.design(space, per_family=21) == configs  # the same design every time
    runs = table_design.plan(configs, extra_seeds_per_family=3)
    seeds = [r for r in runs if r.seed == 1]
    assert len(runs) == 154 + 7 * 4 and len(seeds) == 7 * 4
    # a partial table covers every family: the first seven runs are the seven study points
    assert {r.config.backbone for r in runs[:7]} == set(space.backbones) and all(
        r.config.study_point for r in runs[:7]
    )


def test_fingerprint_follows_the_initial_weights() -> None:
    a = table_design.fingerprint("tiny_cnn", 32, 1)
    assert a == table_design.fingerprint("tiny_cnn", 32, 1)
    assert a != table_design.fingerprint("tiny_cnn", 32, 3)


@pytest.mark.slow
def test_table_smoke_resumes_and_trains_stale_rows_again(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path)]
    assert table.main([*TINY, *out, "--shard", "0/2", "--limit", "1"]) == 0
    assert table.main([*TINY, *out, "--shard", "1/2", "--limit", "1"]) == 0
    rows = table.read_runs(tmp_path)
    assert len(rows) == 2 and {r["key"] for r in rows} == {"tiny_cnn-study@s0", "tiny_cnn-00@s0"}
    header = json.loads((tmp_path / "table.json").read_text())
    assert len(header["oof_patients"]) == 16 and len(header["indep_labels"]) == 12
    row = rows[0]
    assert [e["epoch"] for e in row["epochs"]] == [1, 2]  # the tiny space's two epochs
    assert all(len(e["oof"]) == 16 and len(e["fold_auc"]) == 5 for e in row["epochs"])
    assert all(0 < e["cpu_seconds"] for e in row["epochs"])  # what the simulator's clock reads
    assert "indep_auc" in row["epochs"][0] and "indep_auc" in row["epochs"][1]  # --eval-epochs and the last
    assert len(row["indep_probs"]) == 12 and all(0 <= p <= 1 for p in row["indep_probs"])

    # a cut-short line (a killed shard) is ignored, and a row with another fingerprint is trained again
    shard0 = tmp_path / "runs-0.jsonl"
    stale = json.loads(shard0.read_text().splitlines()[0])
    shard0.write_text(json.dumps({**stale, "fingerprint": "old"}) + "\n" + '{"key": "cut')
    assert table.main([*TINY, *out, "--shard", "0/2", "--limit", "1"]) == 0
    keys = [(r["key"], r["fingerprint"]) for r in table.read_runs(tmp_path)]
    assert (stale["key"], stale["fingerprint"]) in keys and (stale["key"], "old") in keys
    # and a finished shard trains nothing again
    before = len(table.read_runs(tmp_path))
    assert table.main([*TINY, *out, "--shard", "1/2", "--limit", "1"]) == 0
    assert len(table.read_runs(tmp_path)) == before + 1  # its next run, not its first again
