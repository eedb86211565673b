"""Search efficiency: the best cv_auc found so far against the compute spent, for three ways to spend it.

Arms, run per seed on the same cohort, folds and seed:

- ``tpe_asha``: the default search (TPE sampler, ASHA early stopping), ``search/run.py --budget N``;
- ``random_fifo``: random sampling, every trial trained to the end, ``--sampler random --scheduler fifo``;
- ``seven_fixed``: the reference study's method, each backbone of the space once at default settings
  (``python -m trainers.cv``), in the space's order.

Compute is counted in fold-epochs (one fold's model trained one epoch and scored), a unit the machine's
load does not change: a trial's fold-epochs are the epochs it ran times the folds. A curve's points are the
trials in the order they finished: x the fold-epochs of all trials finished so far, y the best cv_auc of a
*complete* trial so far (the model a search would register; an early-stopped trial's low-fidelity value is
not a found model). Per seed: every arm's best cv_auc at the compute the seven-fixed arm used, and the
fold-epochs each arm needed to reach 0.95 x the best cv_auc any arm found. Medians over seeds are reported,
with the ratio of fold-epochs tpe_asha / random_fifo.

    python -m bench.efficiency                        # 5 seeds, the cpu space, the default phantom
    python -m bench.efficiency --seeds 10,11 --out /tmp/tuning   # tune on other seeds than the reported
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench._common import RESULTS, machine_id, median, table, write_result

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("tpe_asha", "random_fifo", "seven_fixed")
REACH = 0.95  # share of the best cv_auc any arm found


def _run(cmd: list[str], timeout: float) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )


def curve(points: list[tuple[float, int, float | None]]) -> list[dict[str, float]]:
    """Best-so-far curve from (finished_at, fold_epochs, cv_auc of a complete trial or None) per trial."""
    spent, best, out = 0, float("nan"), []
    for _, fold_epochs, auc in sorted(points, key=lambda p: p[0]):
        spent += fold_epochs
        if auc is not None and not (auc <= best):  # also replaces the initial NaN
            best = auc
        out.append({"fold_epochs": spent, "best_cv_auc": best})
    return out


def best_at(points: list[dict[str, float]], budget: float) -> float:
    """Best cv_auc of a curve within `budget` fold-epochs (NaN when nothing complete by then)."""
    inside = [
        p["best_cv_auc"]
        for p in points
        if p["fold_epochs"] <= budget and p["best_cv_auc"] == p["best_cv_auc"]
    ]
    return max(inside) if inside else float("nan")


def reach(points: list[dict[str, float]], target: float) -> float:
    """Fold-epochs a curve needed to reach `target` (inf when it never did)."""
    for p in points:
        if p["best_cv_auc"] >= target:
            return float(p["fold_epochs"])
    return math.inf


def search_points(runs: Path, study: str, folds: int) -> list[tuple[float, int, float | None]]:
    """(finished_at, fold-epochs, cv_auc if complete) of every finished trial of a study."""
    import optuna

    from search.study import StudyPaths, load_config

    config = load_config(StudyPaths(runs / study))
    trials = optuna.load_study(study_name=study, storage=config.storage).get_trials(deepcopy=False)
    points = []
    for t in trials:
        if t.datetime_complete is None:
            continue
        auc = t.value if t.state == optuna.trial.TrialState.COMPLETE else None
        points.append((t.datetime_complete.timestamp(), len(t.intermediate_values) * folds, auc))
    return points


def run_search(
    args: argparse.Namespace, work: Path, arm: str, seed: int
) -> list[tuple[float, int, float | None]]:
    """One search arm for one seed through `search/run.py` (Ray Tune, Optuna, MLflow; no registration)."""
    budget, extra = (
        (args.tpe_budget, ["--study-first" if args.warm_start else "--no-study-first"])
        if arm == "tpe_asha"
        else (args.random_budget, ["--sampler", "random", "--scheduler", "fifo", "--no-study-first"])
    )
    study = f"{arm}-s{seed}"
    cmd = [
        sys.executable,
        "search/run.py",
        "--budget",
        str(budget),
        "--space",
        args.space,
        "--seed",
        str(seed),
        "--manifest",
        str(args.manifest),
        "--folds",
        str(args.folds),
        "--no-register",
        "--radiomics-trials",
        "0",  # the deep search alone
        "--no-pretrained",
        "--runs-dir",
        str(work),
        "--study",
        study,
        *extra,
        *args.search_args,
    ]
    _run(cmd, args.timeout)
    return search_points(work, study, args.folds)


def run_fixed(args: argparse.Namespace, work: Path, seed: int) -> list[tuple[float, int, float | None]]:
    """Each backbone of the space once at the trainer's default settings and the space's first resolution."""
    from spaces import get_space

    space = get_space(args.space)
    epochs = args.max_epochs  # resolved by main (0: the space's)

    def one(i_backbone: tuple[int, str]) -> tuple[float, int, float | None]:
        i, backbone = i_backbone
        out = work / f"fixed-s{seed}-{backbone}.json"
        _run(
            [
                sys.executable,
                "-m",
                "trainers.cv",
                "--manifest",
                str(args.manifest),
                "--backbone",
                backbone,
                "--resolution",
                str(space.resolutions[0]),
                "--epochs",
                str(epochs),
                "--folds",
                str(args.folds),
                "--seed",
                str(seed),
                "--threads",
                "1",
                "--json",
                str(out),
            ],
            args.timeout,
        )
        summary = json.loads(out.read_text())
        return (float(i), summary["epochs_completed"] * args.folds, float(summary["cv_auc"]))

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:  # in the space's order, as the study did
        return list(pool.map(one, enumerate(space.backbones)))


def summarise(
    curves: dict[str, dict[int, list[dict[str, float]]]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-arm medians over seeds: best cv_auc at the seven-fixed arm's compute, fold-epochs to 0.95 x best."""
    seeds = sorted(curves["seven_fixed"])
    per_seed: dict[str, dict[str, list[float]]] = {
        arm: {"at_equal": [], "reach": [], "best": []} for arm in ARMS
    }
    for seed in seeds:
        equal = curves["seven_fixed"][seed][-1]["fold_epochs"]
        best_any = max(
            p["best_cv_auc"]
            for arm in ARMS
            for p in curves[arm][seed]
            if p["best_cv_auc"] == p["best_cv_auc"]
        )
        for arm in ARMS:
            c = curves[arm][seed]
            per_seed[arm]["at_equal"].append(best_at(c, equal))
            per_seed[arm]["reach"].append(reach(c, REACH * best_any))  # inf: never reached
            found = [
                p["best_cv_auc"] for p in c if p["best_cv_auc"] == p["best_cv_auc"]
            ]  # NaN: none complete yet
            per_seed[arm]["best"].append(max(found, default=float("nan")))
    rows = [
        {
            "arm": arm,
            "seeds": len(seeds),
            "median best cv_auc": median(per_seed[arm]["best"]),
            "median cv_auc at seven_fixed's compute": median(per_seed[arm]["at_equal"]),
            f"median fold-epochs to {REACH:g} x best": median(per_seed[arm]["reach"]),
            "median fold-epochs spent": median([c[-1]["fold_epochs"] for c in curves[arm].values()]),
        }
        for arm in ARMS
    ]
    tpe, rnd = median(per_seed["tpe_asha"]["reach"]), median(per_seed["random_fifo"]["reach"])
    verdict = {
        "fold_epoch_ratio_tpe_over_random": tpe / rnd if math.isfinite(rnd) and rnd > 0 else None,
        "target_ratio": 1 / 3,
        "tpe_beats_seven_fixed_at_equal_compute": median(per_seed["tpe_asha"]["at_equal"])
        > median(per_seed["seven_fixed"]["at_equal"]),
        "per_seed": {
            arm: {k: [v if math.isfinite(v) else None for v in vs] for k, vs in d.items()}
            for arm, d in per_seed.items()
        },  # None: never reached (or nothing complete)
    }
    return rows, verdict


def plot(curves: dict[str, dict[int, list[dict[str, float]]]], path: Path) -> None:
    """Best-so-far cv_auc against fold-epochs, one thin line per seed, one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        for i, (_seed, c) in enumerate(sorted(curves[arm].items())):
            ax.step(
                [p["fold_epochs"] for p in c],
                [p["best_cv_auc"] for p in c],
                where="post",
                color=colour,
                alpha=0.7,
                lw=1.2,
                label=arm if i == 0 else None,
            )
    ax.set_xlabel("cumulative fold-epochs (compute)")
    ax.set_ylabel("best cv_auc of a complete trial so far")
    ax.set_title("Search efficiency on the phantom (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def resummarise(path: Path, out_dir: Path) -> int:
    """The table, verdict and plot again from a result's curves (e.g. after a fix to the summary)."""
    data = json.loads(path.read_text())
    curves = {arm: {int(seed): c for seed, c in data["curves"][arm].items()} for arm in ARMS}
    data["rows"], data["verdict"] = summarise(curves)
    print(table(data["rows"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(curves, out_dir / "efficiency.png")
    print(f"wrote {write_result('efficiency', data, out_dir)} and {out_dir / 'efficiency.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--seeds", default="0,1,2,3,4", help="comma-separated seeds (at least 5 for a reported run)"
    )
    p.add_argument("--space", default="cpu")
    p.add_argument("--manifest", type=Path, help="cohort CSV (default: the default phantom, 112 patients)")
    p.add_argument("--folds", type=int, default=5)
    # Sized so 5 seeds fit in 90 minutes on a 2-core CPU: at the cpu space's 8 epochs one seed of 24 + 7 trials
    # took about 20 minutes (the seven fixed configs alone about 7, HRNet's epochs being 3-4x the others'); at
    # 6 epochs, 16 + 5 trials took 17-24 minutes a seed (1 h 41 min for 5); at 5 epochs 14 + 4 trials took
    # 15 minutes for one seed. 4 epochs and 14 + 4 trials leave room for the seeds that draw HRNet often.
    p.add_argument("--tpe-budget", type=int, default=14, help="trials of the TPE + ASHA arm per seed")
    p.add_argument("--random-budget", type=int, default=4, help="trials of the random + FIFO arm per seed")
    p.add_argument(
        "--max-epochs",
        type=int,
        default=4,
        help="epochs of a full trial, all arms (0: the space's; the cpu space's 8 does not fit 90 min)",
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="the TPE + ASHA arm starts from the seven fixed configs (search/run.py --study-first; off here, "
        "so that the arms are the ones the earlier results measured)",
    )
    p.add_argument(
        "--arms", default=",".join(ARMS), help="comma-separated arms to run (tuning; a report runs all)"
    )
    p.add_argument(
        "--parallel", type=int, default=2, help="seven-fixed arm: trainings at once (1 thread each)"
    )
    p.add_argument(
        "--search-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="passed on to search/run.py (e.g. --grace-epochs 1 --reduction-factor 4)",
    )
    p.add_argument("--timeout", type=float, default=7200, help="seconds for any one run")
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    p.add_argument(
        "--summarise",
        type=Path,
        metavar="JSON",
        help="only summarise and plot the curves of an earlier efficiency.json (nothing is trained)",
    )
    return p


def run_arms(
    args: argparse.Namespace, arms: list[str], seeds: list[int], out_dir: Path, started: float
) -> dict:
    """Every arm at every seed; their curves (arm -> seed -> points), kept in `efficiency-partial.json` as
    they come (a stopped run keeps what it has)."""
    curves: dict[str, dict[int, list[dict[str, float]]]] = {arm: {} for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="stagesearch-efficiency-") as tmp:
        work = Path(tmp)
        for seed in seeds:
            for arm in arms:
                t0 = time.perf_counter()
                points = (
                    run_fixed(args, work, seed) if arm == "seven_fixed" else run_search(args, work, arm, seed)
                )
                curves[arm][seed] = curve(points)
                print(
                    f"seed {seed} {arm}: {len(points)} trials, {curves[arm][seed][-1]['fold_epochs']} fold-epochs, "
                    f"best {curves[arm][seed][-1]['best_cv_auc']:.3f} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            done = {"seeds_done": seeds[: seeds.index(seed) + 1], "curves": curves}
            write_result("efficiency-partial", {**done, "wall_s": time.perf_counter() - started}, out_dir)
    return curves


def write_verdict(
    args: argparse.Namespace, curves: dict, out_dir: Path, manifest_given: Any, wall_s: float
) -> Path:
    """The three arms compared: the table and verdict printed, `efficiency.json` and its figure written."""
    rows, verdict = summarise(curves)
    print()
    print(table(rows))
    ratio = verdict["fold_epoch_ratio_tpe_over_random"]
    print(
        f"\nTPE + ASHA needed {ratio:.2f} x the fold-epochs of random + FIFO to reach {REACH:g} x the best "
        f"(target <= 0.33); beats seven fixed configs at equal compute: "
        f"{verdict['tpe_beats_seven_fixed_at_equal_compute']}"
        if ratio is not None
        else "\nrandom + FIFO never reached the target on the median seed: no ratio"
    )
    plot(curves, out_dir / "efficiency.png")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "timeout", "manifest")}
    settings["cohort"] = "default phantom" if manifest_given is None else Path(manifest_given).name
    payload = {"settings": settings, "rows": rows, "verdict": verdict, "curves": curves, "wall_s": wall_s}
    return write_result("efficiency", payload, out_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.summarise:
        return resummarise(args.summarise, Path(args.out) if args.out else args.summarise.parent)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a for a in args.arms.split(",") if a]
    if unknown := sorted(set(arms) - set(ARMS)):
        raise SystemExit(f"--arms: unknown {', '.join(unknown)} (choose from {', '.join(ARMS)})")
    from spaces import get_space

    args.max_epochs = args.max_epochs or get_space(args.space).max_epochs  # every arm trains at most this
    args.search_args = ["--max-epochs", str(args.max_epochs), *args.search_args]
    manifest_given = args.manifest
    if args.manifest is None:
        from trainers.cv import resolve_manifest

        args.manifest = resolve_manifest(None)
    started = time.perf_counter()
    out_dir = Path(args.out) if args.out else RESULTS / machine_id()
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = run_arms(args, arms, seeds, out_dir, started)
    if set(arms) != set(ARMS):  # a tuning run: its curves, no verdict (that compares all three arms)
        settings = {**vars(args), "manifest": None, "out": None}
        payload = {"settings": settings, "curves": curves, "wall_s": time.perf_counter() - started}
        path = write_result("efficiency-tuning", payload, out_dir)
        (out_dir / "efficiency-partial.json").unlink(missing_ok=True)
        print(f"wrote {path} (arms {', '.join(arms)} only: no verdict)")
        return 0
    path = write_verdict(args, curves, out_dir, manifest_given, time.perf_counter() - started)
    (out_dir / "efficiency-partial.json").unlink(missing_ok=True)
    print(f"wrote {path} and {out_dir / 'efficiency.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
