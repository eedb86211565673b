"""`python -m bench.soak`: a long search with reused trial workers, watched for growth.

Runs `stagesearch run` on the `tiny` space (a small phantom, one epoch per trial, FIFO, no registration) for
`--trials` trials, with Ray's trial workers reused as in production, and samples every `--every` seconds the
resident memory of the driver and of each trial worker, their open file descriptors, and the driver's child
processes; the number of finished trials is read from the study's Optuna file. It reports each process's
memory after trial `--early` and at the end, the growth between them, and the driver's CPU share, writes every
sample and a figure, and with `--check` exits 1 when a target is missed: worker memory at the end within 10 %
of after trial `--early`, no more descriptors or processes at the end than then (medians of 5 samples; the end's
may not exceed the most seen early, as descriptors come and go with each trial).

With `--space cpu` it runs the default search's own trials instead (8 epochs, 5 folds, the 112-patient
phantom), to see what a worker of a real search holds at its peak (`worker_mb_max`).

    python -m bench.soak                        # 1,000 trials (about half an hour on 2 cores)
    python -m bench.soak --trials 100 --early 30 --check     # the short version the tests run
    python -m bench.soak --space cpu --trials 7 --early 2    # the seven study points of the default search
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, machine_id, table, write_result

ROOT = Path(__file__).resolve().parents[1]
GROWTH_LIMIT = 0.10  # worker memory may grow this much between trial --early and the end


@dataclass
class Sample:
    """One look at the search's processes."""

    t: float  # seconds since the search started
    trials: int  # finished trials so far
    driver_mb: float
    driver_fds: int
    children: int  # the driver's descendant processes (Ray's included)
    driver_cpu_s: float
    workers: dict[int, float] = field(default_factory=dict)  # trial worker pid -> resident MB
    worker_fds: dict[int, int] = field(default_factory=dict)
    # trial worker pid -> unique MB (USS: its private pages, what it costs beyond the libraries' pages every
    # process maps and shares; resident memory counts those in every process)
    worker_uss: dict[int, float] = field(default_factory=dict)


def finished_trials(db: Path) -> int:
    """Finished trials in the study's SQLite file, read without creating or locking anything."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as con:
            row = con.execute(
                "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def is_trial_worker(cmdline: list[str]) -> bool:
    """A Ray worker process holding a trial actor (reused from trial to trial): its title is
    `ray::ImplicitFunc...` (Tune's function trainable)."""
    title = " ".join(cmdline)
    return title.startswith("ray::ImplicitFunc")


def sample(driver: Any, db: Path, started: float) -> Sample:
    """One `Sample` of the driver (a psutil.Process) and its descendants."""
    import psutil

    with driver.oneshot():
        mem, fds, cpu = driver.memory_info().rss, driver.num_fds(), driver.cpu_times()
    s = Sample(time.time() - started, finished_trials(db), mem / 2**20, fds, 0, cpu.user + cpu.system)
    kids = driver.children(recursive=True)
    s.children = len(kids)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            if is_trial_worker(kid.cmdline()):
                full = kid.memory_full_info()
                s.workers[kid.pid] = full.rss / 2**20
                s.worker_uss[kid.pid] = full.uss / 2**20
                s.worker_fds[kid.pid] = kid.num_fds()
    return s


def search_command(args: argparse.Namespace, runs: Path) -> list[str]:
    """The search it watches: the tiny space on a small phantom, one epoch a trial, 3 folds; or with `--space
    cpu` the default's own trials (8 epochs, 5 folds, the 112-patient phantom: the first seven are the
    families' study points, HRNet's the heaviest)."""
    sized = ["--max-epochs", "1", "--folds", "3"] if args.space == "tiny" else []
    patients = args.patients or (24 if args.space == "tiny" else 112)
    return [
        sys.executable,
        str(ROOT / "search" / "run.py"),
        "--space",
        args.space,
        "--budget",
        str(args.trials),
        "--phantom-patients",
        str(patients),
        *sized,
        "--scheduler",
        "fifo",
        "--no-register",
        "--radiomics-trials",
        "0",  # the deep search alone
        "--no-pretrained",
        "--runs-dir",
        str(runs),
        "--study",
        "soak",
        "--quiet",
    ]


def watch(args: argparse.Namespace, runs: Path) -> tuple[list[Sample], int, float]:
    """Run the search, sampling it; (samples, its exit code, its wall seconds)."""
    import psutil

    log = runs / "search.log"
    runs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(
            search_command(args, runs), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    driver = psutil.Process(proc.pid)
    samples: list[Sample] = []
    db = runs / "soak" / "optuna.db"
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                samples.append(sample(driver, db, started))
                last = samples[-1]
                if len(samples) % max(1, int(60 / args.every)) == 1:
                    mem = " ".join(f"{v:.0f}" for v in last.workers.values())
                    print(
                        f"  {last.t:6.0f} s  trials {last.trials:5d}  driver {last.driver_mb:.0f} MB  "
                        f"workers [{mem}] MB  fds {last.driver_fds}  processes {last.children}",
                        flush=True,
                    )
            time.sleep(args.every)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
        proc.wait()
    if proc.returncode:
        print(log.read_text()[-3000:], file=sys.stderr)
    return samples, proc.returncode, time.time() - started


def at_trial(samples: list[Sample], n: int) -> Sample | None:
    """The first sample taken once `n` trials had finished."""
    return next((s for s in samples if s.trials >= n), None)


WINDOW = 5  # samples whose median stands for "after trial --early" and for "the end" (one sample is noisy)


def _fds(s: Sample, pids: Any) -> int:
    return s.driver_fds + sum(s.worker_fds.get(p, 0) for p in pids)


def _peak(samples: list[Sample], field_name: str) -> float:
    """The most any worker held in any sample, of `workers` (resident) or `worker_uss` (its own pages), MB."""
    return round(max((max(getattr(s, field_name).values(), default=0) for s in samples), default=0), 1)


def summarise(samples: list[Sample], early: int, wall_s: float) -> dict[str, Any]:
    """Memory, descriptors and processes after trial `early` and at the end (medians of `WINDOW` samples
    each); the targets' verdicts."""
    first = at_trial(samples, early)
    if first is None:
        return {"problem": f"fewer than {early} trials finished while sampled"}
    start = samples.index(first)
    pids = list(first.workers)
    early_w = samples[start : start + WINDOW]
    # the last samples with every worker alive (at the very end Ray stops them one by one)
    alive = [s for s in samples[start:] if all(p in s.workers for p in pids)]
    end_w = alive[-WINDOW:] or samples[-1:]
    end = end_w[-1]

    def med(values: list[float]) -> float:
        return float(np.median(values))

    workers = []
    for pid in pids:
        mb_early = med([s.workers[pid] for s in early_w if pid in s.workers])
        ends = [s.workers[pid] for s in end_w if pid in s.workers]
        mb_end = med(ends) if ends else None
        growth = None if mb_end is None else round(mb_end / mb_early - 1, 3)
        workers.append(
            {
                "pid": pid,
                "mb_early": round(mb_early, 1),
                "mb_end": mb_end and round(mb_end, 1),
                "growth": growth,
            }
        )
    growth = [w["growth"] for w in workers if w["growth"] is not None]
    fds_early, fds_end = med([_fds(s, pids) for s in early_w]), med([_fds(s, pids) for s in end_w])
    procs_early, procs_end = med([s.children for s in early_w]), med([s.children for s in end_w])
    return {
        "early_trial": early,
        "window": WINDOW,
        "early": {"trials": first.trials, "t": round(first.t, 1)},
        "end": {"trials": end.trials, "t": round(end.t, 1)},
        "driver": {
            "mb_early": round(med([s.driver_mb for s in early_w]), 1),
            "mb_end": round(med([s.driver_mb for s in end_w]), 1),
        },
        "workers": workers,
        "worker_mb_max": _peak(samples, "workers"),
        "worker_uss_mb_max": _peak(samples, "worker_uss"),
        "fds": {"early": fds_early, "end": fds_end},
        "processes": {"early": procs_early, "end": procs_end},
        "new_workers": sorted({p for s in samples for p in s.workers} - set(pids)),
        "driver_cpu_share": round((end.driver_cpu_s - first.driver_cpu_s) / max(end.t - first.t, 1e-9), 3),
        "wall_s": round(wall_s, 1),
        "targets": {
            "worker_growth_within_10pct": bool(growth) and max(growth) <= GROWTH_LIMIT,
            # descriptors and processes come and go with each trial (a file written, a connection): the end's
            # median may not exceed the most seen after trial --early
            "no_more_fds": fds_end <= max(_fds(s, pids) for s in early_w),
            "no_more_processes": procs_end <= max(s.children for s in early_w),
        },
    }


def plot(samples: list[Sample], path: Path) -> Path:
    """Resident memory of the driver and each worker, and descriptors, against finished trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = [s.trials for s in samples]
    ax.plot(xs, [s.driver_mb for s in samples], label="driver")
    for i, pid in enumerate(sorted({p for s in samples for p in s.workers})):
        pts = [(s.trials, s.workers[pid]) for s in samples if pid in s.workers]
        ax.plot(*zip(*pts, strict=True), label=f"worker {i + 1}")
    ax.set(xlabel="finished trials", ylabel="resident memory (MB)", title="memory")
    ax.legend(fontsize=8)
    bx.plot(xs, [s.driver_fds + sum(s.worker_fds.values()) for s in samples], label="open descriptors")
    bx.plot(xs, [s.children for s in samples], label="driver's processes")
    bx.set(xlabel="finished trials", title="descriptors and processes")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trials", type=int, default=1000, help="trials of the search (default 1000)")
    p.add_argument("--early", type=int, default=50, help="the trial the end is compared with (default 50)")
    p.add_argument(
        "--space", choices=("tiny", "cpu"), default="tiny", help="the trials' space (default tiny)"
    )
    p.add_argument(
        "--patients", type=int, default=None, help="patients of the phantom (default 24; cpu: 112)"
    )
    p.add_argument("--every", type=float, default=3.0, help="seconds between samples (default 3)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/<machine>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"soak: {args.trials} trials of the {args.space} space, sampled every {args.every:g} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="stagesearch-soak-") as tmp:
        samples, rc, wall = watch(args, Path(tmp) / "runs")
    if rc:
        print(f"error: the search exited {rc}", file=sys.stderr)
        return 1
    summary = summarise(samples, args.early, wall)
    if "problem" in summary:
        print(f"error: {summary['problem']}", file=sys.stderr)
        return 1
    name = f"soak-{args.trials}" + ("" if args.space == "tiny" else f"-{args.space}")
    out = args.out or RESULTS / machine_id()
    path = write_result(name, {"summary": summary, "samples": [asdict(s) for s in samples]}, out)
    figure = plot(samples, Path(out) / f"{name}.png")
    print(table(summary["workers"]))
    print(
        f"driver {summary['driver']['mb_early']:.0f} -> {summary['driver']['mb_end']:.0f} MB, "
        f"fds {summary['fds']['early']} -> {summary['fds']['end']}, processes {summary['processes']['early']} -> "
        f"{summary['processes']['end']}, driver CPU share {summary['driver_cpu_share']:.2f}, {wall:.0f} s"
    )
    print(
        f"a trial worker's peak: {summary['worker_mb_max']:.0f} MB resident, {summary['worker_uss_mb_max']:.0f} MB "
        "unique (its own pages, beside the shared libraries')"
    )
    print(f"targets: {json.dumps(summary['targets'])}\nwrote {path} and {figure}")
    return 1 if args.check and not all(summary["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
