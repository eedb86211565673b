"""The GPU check's verdict: per-backbone throughput, packing, utilisation, and `--budget 200` extrapolated.

Reads what `bench/gpu_check.sh` wrote (`throughput.json`, `pack.json`, and `efficiency.json` where the
efficiency bench has run) and extrapolates the wall time of a 200-trial search of a space:

    trial time  = E * epoch(b, r) + setup           (E: mean epochs a trial trains under ASHA)
    epoch(b, r) = ((k - 1) * N + N / 3) / (img/s(b, r) * c)   (k folds of N slices; evaluation ~ 1/3 image)
    wall        = budget * mean over the space's (b, r) of the trial time / packing

where c = the trainer's img/s alone / the throughput bench's img/s for the packed configuration (eval,
per-epoch work), and packing = aggregate img/s of the packed processes / one alone. E comes from the
efficiency bench's TPE + ASHA arm when its results are there (scaled to the space's epochs by ASHA's rung
arithmetic), else from that arithmetic alone.

    python -m bench.gpu_report --results bench/results/<machine>
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench._common import describe_machine, table, write_result

TARGETS = {"gpu_util_%": 80.0, "packed_over_alone": 1.0, "budget_200_minutes": 15.0}


def asha_mean_epochs(max_t: int, grace: int = 1, reduction: float = 3.0) -> float:
    """Mean epochs per trial if ASHA keeps the top 1/reduction at every rung (synchronous approximation)."""
    rungs = []
    t = grace
    while t < max_t:
        rungs.append(t)
        t = int(round(t * reduction))
    mean, alive = 0.0, 1.0
    for rung in rungs:
        stopped = alive * (1 - 1 / reduction)
        mean += stopped * rung
        alive -= stopped
    return mean + alive * max_t


def extrapolate(
    throughput_rows: list[dict[str, Any]],
    budget: int,
    epochs_per_trial: float,
    folds: int,
    slices: int,
    setup_s: float,
    calibration: float,
    packing: float,
    precision: str = "bf16+channels_last",
) -> dict[str, Any]:
    """Wall-time estimate of a `budget`-trial search over the (backbone, resolution) grid of the rows."""
    rows = [r for r in throughput_rows if r["precision"] == precision] or throughput_rows
    images = (folds - 1) * slices + slices / 3
    per_config = {}
    for r in rows:
        epoch = images / (r["img_per_s"] * calibration)
        per_config[f"{r['backbone']}@{r['px']}"] = epochs_per_trial * epoch + setup_s
    mean_trial = statistics.fmean(per_config.values())
    wall = budget * mean_trial / packing
    return {
        "budget": budget,
        "epochs_per_trial": epochs_per_trial,
        "mean_trial_s": mean_trial,
        "packing": packing,
        "calibration": calibration,
        "setup_s": setup_s,
        "budget_minutes": wall / 60,
        "trial_s_by_config": per_config,
    }


def efficiency_epochs_per_trial(data: dict[str, Any]) -> tuple[float, int] | None:
    """Mean epochs a trial of the efficiency bench's TPE + ASHA arm trained, and that bench's max epochs.

    Read from its curves (cumulative fold-epochs, one point per finished trial, every seed); None when the
    result does not say how many epochs a full trial had.
    """
    settings = data.get("settings", {})
    max_epochs, folds = settings.get("max_epochs"), settings.get("folds")
    per_trial = []
    for points in data.get("curves", {}).get("tpe_asha", {}).values():
        spent = [0.0] + [p["fold_epochs"] for p in points]
        per_trial += [(b - a) / folds for a, b in zip(spent, spent[1:], strict=False)] if folds else []
    if not (max_epochs and per_trial):
        return None
    return statistics.fmean(per_trial), int(max_epochs)


def _epochs_per_trial(results: Path, max_t: int, efficiency: Path | None = None) -> tuple[float, str]:
    """E for the extrapolation: the efficiency bench's measured mean where there is one (`efficiency`, else
    `results/efficiency.json`), scaled from its max epochs to `max_t` by the rung arithmetic (the bench runs a
    small space at few epochs), else the arithmetic."""
    eff = efficiency or results / "efficiency.json"
    measured = efficiency_epochs_per_trial(json.loads(eff.read_text())) if eff.exists() else None
    if measured:
        epochs, bench_max = measured
        scaled = epochs * asha_mean_epochs(max_t) / asha_mean_epochs(bench_max)
        return scaled, (
            f"efficiency bench ({eff.name}), TPE + ASHA arm: {epochs:.2f} epochs a trial at max "
            f"{bench_max}, scaled to max {max_t} by ASHA's rung arithmetic"
        )
    return asha_mean_epochs(max_t), f"ASHA rung arithmetic (grace 1, reduction 3, max {max_t} epochs)"


def report(
    results: Path, budget: int = 200, max_t: int = 30, folds: int = 5, efficiency: Path | None = None
) -> dict[str, Any]:
    """Combine the GPU check's files into one verdict (dict) and the tables it prints."""
    tp = json.loads((results / "throughput.json").read_text())
    pack = json.loads((results / "pack.json").read_text())
    rows = tp["rows"]
    settings = pack["settings"]
    same = [
        r
        for r in rows
        if r["backbone"] == settings["backbone"]
        and r["px"] == settings["resolution"]
        and r["precision"] != "fp32"
    ]
    calibration = pack["alone"]["img_per_s"] / same[0]["img_per_s"] if same else 1.0
    setups = [s for s in pack["alone"]["setup_s"] + pack["packed"]["setup_s"] if s is not None]
    epochs, source = _epochs_per_trial(results, max_t, efficiency)
    slices = tp["settings"]["patients"] * tp["settings"]["slabs"]
    estimate = extrapolate(
        rows,
        budget,
        epochs,
        folds,
        slices,
        statistics.median(setups) if setups else 0.0,
        calibration,
        pack["packed_over_alone"],
    )
    estimate["epochs_source"] = source
    verdict = {
        "gpu_util_%": pack["packed"]["gpu_util_%"],
        "packed_over_alone": pack["packed_over_alone"],
        "budget_200_minutes": estimate["budget_minutes"],
    }
    checks = {
        "gpu_util_%": (verdict["gpu_util_%"] or 0) >= TARGETS["gpu_util_%"],
        "packed_over_alone": verdict["packed_over_alone"] >= TARGETS["packed_over_alone"],
        "budget_200_minutes": verdict["budget_200_minutes"] <= TARGETS["budget_200_minutes"],
    }
    return {"verdict": verdict, "targets": TARGETS, "met": checks, "estimate": estimate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="folder holding throughput.json and pack.json")
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--space", default="paper", help="the space whose --budget is extrapolated")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument(
        "--efficiency",
        type=Path,
        help="an efficiency bench result (efficiency.json) whose TPE + ASHA epochs a trial to use, e.g. "
        "from the CPU machine that ran it (default: one in --results, else ASHA's rung arithmetic)",
    )
    args = p.parse_args(argv)
    if args.efficiency and not args.efficiency.is_file():
        p.error(f"--efficiency: no such file {args.efficiency}")
    from spaces import get_space

    results = Path(args.results)
    out = report(results, args.budget, get_space(args.space).max_epochs, args.folds, args.efficiency)
    tp = json.loads((results / "throughput.json").read_text())
    print(table(tp["rows"], ["backbone", "px", "precision", "img_per_s", "move_%", "augment_%", "step_%"]))
    print()
    rows = [
        {"check": k, "measured": out["verdict"][k], "target": out["targets"][k], "met": out["met"][k]}
        for k in out["verdict"]
    ]
    print(table(rows))
    e = out["estimate"]
    print(
        f"\n--budget {e['budget']}: {e['budget_minutes']:.1f} min ({e['epochs_per_trial']:.2f} epochs a trial "
        f"from {e['epochs_source']}; mean trial {e['mean_trial_s']:.1f} s alone; packing x{e['packing']:.2f})"
    )
    if tp.get("machine"):  # the verdict is the GPU machine's, wherever the report is recomputed
        out = {**out, "machine": tp["machine"], "reported_on": describe_machine()}
    path = write_result("gpu_check", out, results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
