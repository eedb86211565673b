"""The fixed cost of a trial: one configuration through `trainers.cv` directly and through the whole search.

In the same run: (a) `python -m trainers.cv` on the configuration (its training seconds, and the setup
inside them: slices to the device and the k fold models built); (b) `search/run.py` narrowed to the same
backbone and resolution (FIFO, no registration) for `--trials` trials through Ray Tune, Optuna and MLflow,
one at a time; (c) a bare `import` of the trial's modules in a fresh process, which a trial pays when its
worker process is not reused. The fixed per-trial cost is the search's time per trial (from the first
trial's start to the last one's final report, over the trial count; Ray's result files) less the direct
run's epoch seconds; the per-search cost is the search's wall time less its
trials'.

    python -m bench.overhead                    # regnetx_002, 32 px, 3 epochs, 5 folds, 3 trials
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import cv_command, median, table, write_result

ROOT = Path(__file__).resolve().parents[1]
TARGET_SHARE = 0.05  # of a 30 s trial
REFERENCE_TRIAL_S = 30.0


def _run(cmd: list[str], timeout: float) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    return wall, proc.stdout


def direct(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`python -m trainers.cv` on the configuration: process wall, training and setup seconds."""
    out = work / "direct.json"
    cmd = cv_command(args, out, "--threads", str(args.threads))
    wall, _ = _run(cmd, args.timeout)
    summary = json.loads(out.read_text())
    epochs = [h["seconds"] for h in summary["history"]]
    return {
        "process_wall_s": wall,
        "train_s": summary["seconds"],
        "setup_s": summary["setup_seconds"],
        "epoch_s": epochs,
        "epochs_sum_s": sum(epochs),
    }


def trial_spans(runs: Path) -> list[tuple[float, float]]:
    """(start, end) of every trial from Ray Tune's result files: the trial function's start to its last report."""
    spans = []
    for result in runs.rglob("ray/**/result.json"):  # Tune's, not other files of that name
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            spans.append((float(rows[0]["started_at"]), float(rows[-1]["reported_at"])))
    return sorted(spans)


def search(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same configuration as a `--trials`-trial search, one trial at a time, timed from Ray's result files."""
    runs = work / "runs"
    cmd = [
        sys.executable,
        "search/run.py",
        "--budget",
        str(args.trials),
        "--space",
        args.space,
        "--backbones",
        args.backbone,
        "--resolutions",
        str(args.resolution),
        "--max-epochs",
        str(args.epochs),
        "--folds",
        str(args.folds),
        "--scheduler",
        "fifo",
        "--no-register",
        "--radiomics-trials",
        "0",  # the deep search alone
        "--no-pretrained",
        "--runs-dir",
        str(runs),
        "--study",
        "overhead",
        "--num-cpus",
        str(args.threads),
        "--cpus-per-trial",
        str(args.threads),
        *(["--manifest", args.manifest] if args.manifest else []),
    ]
    wall, _ = _run(cmd, args.timeout)
    spans = trial_spans(runs)
    first_start, last_end = spans[0][0], spans[-1][1]
    return {
        "process_wall_s": wall,
        "trials": len(spans),
        "trial_span_s": [e - s for s, e in spans],
        "trials_s": last_end - first_start,
    }


def import_cost(args: argparse.Namespace) -> float:
    """Seconds a fresh process spends importing what a trial runs (median of 2)."""
    code = "import search.tune.trainable, trainers.train, trainers.backbones"
    return median([_run([sys.executable, "-c", code], args.timeout)[0] for _ in range(2)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="regnetx_002", help="a backbone of --space")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument(
        "--epochs", type=int, default=3, help="epochs of each trial (3: about a 30 s trial on one core)"
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--space", default="cpu", help="the space narrowed to the backbone and resolution")
    p.add_argument(
        "--threads", type=int, default=1, help="CPUs (torch threads) of the direct run and each trial"
    )
    p.add_argument("--manifest", help="cohort CSV (default: the phantom cohort)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stagesearch-overhead-") as tmp:
        work = Path(tmp)
        d = direct(args, work)
        s = search(args, work)
    imports = import_cost(args)
    per_trial = s["trials_s"] / s["trials"]  # first trial's start to last trial's end, trials one at a time
    fixed = per_trial - d["epochs_sum_s"]
    per_search = s["process_wall_s"] - s["trials_s"]
    rows = [
        {"what": "direct: trainers.cv process wall", "seconds": d["process_wall_s"]},
        {"what": "direct: epochs (training + evaluation)", "seconds": d["epochs_sum_s"]},
        {"what": "direct: setup (slices to device, k models built)", "seconds": d["setup_s"]},
        {"what": f"search: time per trial ({s['trials']} trials one after another)", "seconds": per_trial},
        {"what": "search: fixed cost per trial (time per trial - direct epochs)", "seconds": fixed},
        {"what": "search: fixed cost per search (wall - trials)", "seconds": per_search},
        {"what": "fresh process: import the trial's modules", "seconds": imports},
    ]
    print(table(rows))
    share = fixed / REFERENCE_TRIAL_S
    print(
        f"\nfixed per-trial cost {fixed:.2f} s = {100 * share:.1f} % of a {REFERENCE_TRIAL_S:g} s trial "
        f"(target <= {100 * TARGET_SHARE:g} %)"
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "timeout")}
    path = write_result(
        "overhead",
        {
            "settings": settings,
            "direct": d,
            "search": s,
            "import_s": imports,
            "fixed_per_trial_s": fixed,
            "per_search_s": per_search,
            "share_of_30s_trial": share,
            "met": share <= TARGET_SHARE,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
