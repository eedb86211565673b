"""What every benchmark shares: the machine's name, the results folder, a printed table, a JSON record."""

from __future__ import annotations

import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name, or None without one."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU for a benchmark
        return None


def machine_id() -> str:
    """Folder name for this machine: CPU model (and GPU name), filesystem-safe."""
    parts = [cpu_model()] + ([gpu_name()] if gpu_name() else [])
    text = "__".join(parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:120]


def describe_machine() -> dict[str, Any]:
    """CPU model, core count and GPU name, recorded beside every result."""
    import os

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """How the bench was run, as `python -m bench.NAME ...`, without `--out` (a folder of this machine)."""
    argv = list(sys.argv if argv is None else argv)
    args, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            args.append(a)
    return " ".join(["python", "-m", f"bench.{Path(argv[0]).stem}", *args])


def cv_command(args: Any, out: Path, *extra: str) -> list[str]:
    """`python -m trainers.cv` for a bench's configuration (`args.backbone`, `.resolution`, `.epochs`, `.folds`,
    `.manifest`), writing its summary to `out`; `extra` flags after the shared ones."""
    cmd = [
        sys.executable,
        "-m",
        "trainers.cv",
        "--backbone",
        args.backbone,
        "--resolution",
        str(args.resolution),
    ]
    cmd += ["--epochs", str(args.epochs), "--folds", str(args.folds), *extra, "--json", str(out)]
    return cmd + (["--manifest", args.manifest] if args.manifest else [])


def write_result(name: str, payload: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Write ``<results>/<machine>/<name>.json`` with the machine, date and command added; returns the path."""
    folder = Path(out_dir) if out_dir else RESULTS / machine_id()
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "bench": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command_line(),
        "machine": describe_machine(),
        **payload,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of dict rows (floats to 3 significant places)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    """Median (the statistic every benchmark reports)."""
    return float(statistics.median(values))
