"""Confirm the search with real training: `stagesearch run` per seed, each winner scored on patients no trial saw.

For every seed this runs the quick start's search exactly (`stagesearch run --budget 200 --seed S`, the default
phantom, an empty cache, no other flag; `--arm seven` runs the seven study configurations alone instead,
`--budget 7 --scheduler fifo`), then scores what it registered with `python -m bench.generalise` on an
independent phantom (by default 1,000 patients of seed 12: neither the search's cohort nor the learning-curve
table's). One row per seed: wall time, the winner, its cv_auc, the corrected estimates, the registered kind and
its independent AUC; the medians over seeds beside them. Each seed's row is written as soon as it is scored, so
a killed run continues with the seeds it has not done (one seed is about an hour and a half on 2 cores).

    python -m bench.confirm --seeds 0,1,2 --work confirm-work
    python -m bench.confirm --arm seven --seeds 0,1,2 --work confirm-work
    python -m bench.confirm --seeds 0 --adopt confirm-work/default-0/runs   # a search already run by hand

The wall time is the span of the study's own log (`logs/search.log`: from its first line to its last, so the
search and the registration, not the interpreter's start); where this bench started the search it also records
the command's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import RESULTS, describe_machine, machine_id, median, table, write_result

ARMS = {
    "default": ["--budget", "200"],
    "seven": ["--budget", "7", "--scheduler", "fifo"],
}
SHOWN = ("seed", "wall_min", "winner", "cv_auc", "corrected", "whole", "kind", "indep_auc")


def build_parser() -> argparse.ArgumentParser:
    """Flags: the arm and seeds, where the searches run, the independent phantom."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.confirm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--arm", choices=sorted(ARMS), default="default", help="what to run per seed [default]")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    ap.add_argument(
        "--work", default="confirm-work", help="folder for the searches' study folders [confirm-work]"
    )
    ap.add_argument("--adopt", default=None, help="runs folder of a search already run (one seed only)")
    ap.add_argument("--patients", type=int, default=1000, help="independent phantom's patients [1000]")
    ap.add_argument("--phantom-seed", type=int, default=12, help="its seed [12]")
    ap.add_argument("--matrix", type=int, default=None, help="its in-plane matrix (default: the phantom's)")
    ap.add_argument("--out", default=None, help="results folder (default: bench/results/<machine>)")
    return ap


def log_span(folder: Path) -> float:
    """Seconds from the first to the last timestamped line of a study's `logs/search.log`."""
    stamps = []
    for line in (folder / "logs" / "search.log").read_text(errors="replace").splitlines():
        try:
            stamps.append(datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
    if len(stamps) < 2:
        raise SystemExit(f"{folder}: its search log has no timestamps to time the search by")
    return (stamps[-1] - stamps[0]).total_seconds()


def run_search(arm: str, seed: int, runs: Path) -> float:
    """`stagesearch run` of the arm for one seed, with an empty cache; the command's seconds."""
    runs.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "stagesearch", "run", *ARMS[arm]]
    command += ["--seed", str(seed), "--runs-dir", str(runs)]
    print(f"seed {seed}: {' '.join(command[2:])} (an empty cache)", flush=True)
    with tempfile.TemporaryDirectory(prefix="stagesearch-cache-") as cache:
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "STAGESEARCH_CACHE": cache})
        return time.perf_counter() - start


def score(runs: Path, study: str, args: argparse.Namespace) -> dict[str, Any]:
    """`python -m bench.generalise` on the version the study registered: its result."""
    from bench.generalise import main as generalise

    winner = registered(runs / study)
    model = f"models:/{winner['model_name']}/{winner['model_version']}"
    argv = ["--runs-dir", str(runs), "--study", study, "--model", model]
    argv += ["--patients", str(args.patients), "--seed", str(args.phantom_seed)]
    argv += ["--matrix", str(args.matrix)] if args.matrix else []
    print(f"scoring {study}: python -m bench.generalise {' '.join(argv)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="generalise-") as out:
        if generalise([*argv, "--out", out]) != 0:
            raise SystemExit(f"{study}: bench.generalise failed")
        (result,) = Path(out).glob("generalise-*.json")
        return json.loads(result.read_text())


def registered(folder: Path) -> dict[str, Any]:
    """The study's `winner.json` (what it registered)."""
    path = folder / "winner.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: nothing registered (no winner.json); did the search finish?")
    return json.loads(path.read_text())


def study_of(runs: Path) -> str:
    """The one study in a runs folder."""
    studies = sorted(p.parent.name for p in runs.glob("*/config.json"))
    if len(studies) != 1:
        raise SystemExit(f"{runs}: expected one study folder, found {studies or 'none'}")
    return studies[0]


def row(seed: int, folder: Path, scored: dict[str, Any], command_s: float | None) -> dict[str, Any]:
    """One seed's figures from its study folder and its independent score."""
    board, winner = json.loads((folder / "leaderboard.json").read_text()), registered(folder)
    best = board["rows"][0]
    whole = (board.get("candidates") or {}).get("selection") or {}
    return {
        "seed": seed,
        "machine": describe_machine()["cpu"],  # the results file's own machine is that of its last write
        "study": folder.name,
        "wall_s": log_span(folder),
        "command_s": command_s,
        "counts": board["counts"],
        "best_trial": {k: best[k] for k in ("trial", "family", "backbone", "cv_auc")},
        "families": families(board),
        "corrected_auc": board.get("corrected_auc"),
        "corrected_auc_ci": board.get("corrected_auc_ci"),
        "whole_selection_auc": whole.get("corrected_auc"),
        "whole_selection_ci": whole.get("corrected_auc_ci"),
        "registered": {k: winner.get(k) for k in ("kind", "trial", "backbone", "cv_auc", "threshold")}
        | {"members": len(winner.get("members") or []) or None, "version": winner["model_version"]},
        "indep": {k: scored[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "oracle_auc")},
        "indep_patients": scored["patients"],
        "indep_seed": scored["seed"],
    }


def families(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each family's best complete trial on the leaderboard (in the seven arm: its study point)."""
    return {r["family"]: {k: r[k] for k in ("trial", "backbone", "cv_auc")} for r in board["rows"]}


def shown(r: dict[str, Any]) -> dict[str, Any]:
    """A row as the printed table shows it."""
    return {
        "seed": r["seed"],
        "wall_min": r["wall_s"] / 60,
        "winner": f"{r['best_trial']['backbone']} (trial {r['best_trial']['trial']})",
        "cv_auc": r["best_trial"]["cv_auc"],
        "corrected": r["corrected_auc"],
        "whole": r["whole_selection_auc"],
        "kind": r["registered"]["kind"],
        "indep_auc": r["indep"]["auc"],
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the seeds done."""
    if not rows:
        return {}
    return {
        "seeds": [r["seed"] for r in rows],
        "median_indep_auc": median([r["indep"]["auc"] for r in rows]),
        "median_wall_s": median([r["wall_s"] for r in rows]),
        "median_cv_auc": median([r["best_trial"]["cv_auc"] for r in rows]),
        "max_wall_s": max(r["wall_s"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    """Run (or adopt) and score each seed not yet in the results file; print and write the rows."""
    args = build_parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.adopt and len(seeds) != 1:
        raise SystemExit("--adopt takes one seed (--seeds N): the seed the adopted search ran with")
    name = f"confirm-{args.arm}"
    path = Path(args.out or RESULTS / machine_id()) / f"{name}.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    work = Path(args.work)
    for seed in seeds:
        if any(r["seed"] == seed for r in rows):
            print(f"seed {seed}: already in {path}, skipped")
            continue
        runs = Path(args.adopt) if args.adopt else work / f"{args.arm}-{seed}" / "runs"
        command_s = None if args.adopt else run_search(args.arm, seed, runs)
        study = study_of(runs)
        scored = score(runs, study, args)
        rows = sorted([*rows, row(seed, runs / study, scored, command_s)], key=lambda r: r["seed"])
        write_result(
            name, {"arm": args.arm, "command_run": ARMS[args.arm], "rows": rows, **summary(rows)}, path.parent
        )
        print(table([shown(r) for r in rows], SHOWN), flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
