"""Several trainer processes packed on one device against one alone, with the GPU's utilisation sampled.

Runs `python -m trainers.cv` once alone and then `--procs` copies at the same time (what a search with
`--gpus-per-trial 1/procs`, or on the CPU `--cpus-per-trial`, does), sampling `nvidia-smi` every second
where there is one. On the CPU, `--alone-threads` gives the lone process more threads (all cores) while each
packed process gets `--threads`. Throughput is training images per
second, from the start of the first counted epoch of any process to the end of the last (the first epoch
of each process, with its warm-up, is left out; staggered starts count against packing, not for it).

    python -m bench.pack --backbone resnet50 --resolution 128 --epochs 8 --procs 4
    python -m bench.pack --device cpu --backbone resnet10t --resolution 64 --epochs 3 --procs 2 \
        --threads 1 --alone-threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import cv_command, table, write_result

SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


def parse_smi(text: str) -> list[tuple[float, float]]:
    """(utilisation %, memory MiB) of every GPU line of `nvidia-smi --query-gpu=... csv,noheader,nounits`."""
    samples = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            samples.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue  # "[N/A]" or a header
    return samples


@dataclass
class Sampler:
    """Calls `nvidia-smi` (or $NVIDIA_SMI) every `interval` seconds in a thread; samples carry a timestamp."""

    interval: float = 1.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (time, util %, MiB)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.command = shlex.split(os.environ.get("NVIDIA_SMI", "nvidia-smi"))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    self.command + SMI_QUERY, capture_output=True, text=True, timeout=10
                ).stdout
                now = time.time()
                for util, mem in parse_smi(out)[:1]:  # the first (the trial's) GPU
                    self.samples.append((now, util, mem))
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.errors.append(str(exc))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean_util(self, start: float, end: float) -> float | None:
        """Mean utilisation of the samples taken in [start, end]."""
        inside = [u for t, u, _ in self.samples if start <= t <= end]
        return sum(inside) / len(inside) if inside else None


def window_throughput(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Aggregate training images/s of processes that ran side by side (conservative).

    Each summary is a `trainers.cv --json` file: `history` rows with `seconds` and `ended_at`, and
    `train_slices_per_epoch`. Every epoch but each process's first (warm-up) counts; the window runs from
    the first counted epoch's start to the last one's end, so time in which some process was not yet (or no
    longer) training lowers the figure rather than raising it.
    """
    counted = [(s["train_slices_per_epoch"], h) for s in summaries for h in s["history"][1:]]
    if not counted:
        raise ValueError("every process trained a single epoch; use --epochs 2 or more")
    start = min(h["ended_at"] - h["seconds"] for _, h in counted)
    end = max(h["ended_at"] for _, h in counted)
    images = sum(n for n, _ in counted)
    return {"start": start, "end": end, "seconds": end - start, "img_per_s": images / (end - start)}


def _command(args: argparse.Namespace, out: Path, threads: int | None) -> list[str]:
    extra = [
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--aug-strength",
        str(args.aug_strength),
    ]
    return cv_command(args, out, *extra, *(["--threads", str(threads)] if threads else []))


def run_group(args: argparse.Namespace, n: int, folder: Path, threads: int | None) -> dict[str, Any]:
    """Start `n` trainer processes at once, sample the GPU, and return the group's throughput."""
    folder.mkdir(parents=True, exist_ok=True)
    outs = [folder / f"proc{i}.json" for i in range(n)]
    started = time.time()
    with Sampler() as sampler:
        procs = [
            subprocess.Popen(
                _command(args, out, threads), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for out in outs
        ]
        try:
            logs = [p.communicate()[0] for p in procs]
        finally:  # interrupted: stop the trainers we started, by their ids
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        i = failed[0][0]
        raise RuntimeError(f"trainer process {i} exited {failed[0][1]}:\n{logs[i][-3000:]}")
    summaries = [json.loads(out.read_text()) for out in outs]
    window = window_throughput(summaries)
    walls = [s["history"][-1]["ended_at"] - started for s in summaries]
    return {
        "processes": n,
        "threads": threads,
        "img_per_s": window["img_per_s"],
        "window_s": window["seconds"],
        "gpu_util_%": sampler.mean_util(window["start"], window["end"]),
        "gpu_mem_MiB_max": max((m for _, _, m in sampler.samples), default=None),
        "setup_s": [s.get("setup_seconds") for s in summaries],
        "process_wall_s": walls,
        "epoch_s": [[h["seconds"] for h in s["history"]] for s in summaries],
        "cv_auc": [s["cv_auc"] for s in summaries],
        "smi_samples": len(sampler.samples),
        "smi_errors": sampler.errors[:3],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--aug-strength", type=float, default=0.5)
    p.add_argument("--procs", type=int, default=4, help="trainer processes packed on the GPU")
    p.add_argument("--device", default="cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument(
        "--alone-threads", type=int, default=None, help="threads of the lone process (default --threads)"
    )
    p.add_argument("--manifest", help="cohort CSV (default: the phantom cohort)")
    p.add_argument(
        "--work",
        default=None,
        help="keep the trainers' JSON in this folder (default: a temporary one, removed)",
    )
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stagesearch-pack-") as tmp:
        work = Path(args.work or tmp)
        alone = run_group(args, 1, work / "alone", args.alone_threads or args.threads)
        packed = run_group(args, args.procs, work / "packed", args.threads)
    rows = [
        {
            k: v
            for k, v in g.items()
            if k in ("processes", "threads", "img_per_s", "window_s", "gpu_util_%", "gpu_mem_MiB_max")
        }
        for g in (alone, packed)
    ]
    print(table(rows))
    ratio = packed["img_per_s"] / alone["img_per_s"]
    print(f"\npacked {args.procs} / alone: {ratio:.2f}x aggregate throughput")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
    path = write_result(
        "pack",
        {"settings": settings, "alone": alone, "packed": packed, "packed_over_alone": ratio},
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
