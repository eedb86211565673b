"""The preprocessing cache: first against second preparation of the phantom, and no scan read by a trial.

In a fresh, empty cache folder: generate the phantom cohort, prepare it (validate, preprocess every scan
into cached ROI slabs, write the folds), prepare it again (validation and cache hits only), then do what a
trial does with the prepared cohort (slices at its resolution, one epoch of every fold) while a Python
audit hook records every file opened: no scan file of the cohort may be among them.

    python -m bench.cache
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import median, table, write_result

TARGET_SPEEDUP = 20.0


def _timed(fn):  # noqa: ANN001, ANN202 - any callable
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def a_trial(prepared) -> None:  # noqa: ANN001 - a PreparedCohort
    """What a trial does with the prepared cohort: slices at its resolution, one epoch of every fold."""
    from trainers.config import TrainConfig
    from trainers.train import cross_validate

    cfg = TrainConfig(backbone="tiny_cnn", resolution=32, epochs=1, device="cpu")
    cross_validate(prepared.slice_data(32, 1), prepared.folds, cfg, log=None)


def files_opened_under(folder: Path, work: Callable[[], object]) -> list[str]:
    """Files under ``folder`` that ``work()`` opens (seen by a Python audit hook)."""
    opened: list[str] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(str(folder)):
                opened.append(path)

    sys.addaudithook(hook)  # audit hooks cannot be removed: the flag switches it off afterwards
    try:
        work()
    finally:
        watching[0] = False
    return opened


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=112, help="phantom cohort size")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed second preparations (median reported)")
    p.add_argument("--out", help="results folder (default bench/results/<machine>)")
    args = p.parse_args(argv)
    from trainers.cv import prepare_cohort, resolve_manifest

    before = os.environ.get("STAGESEARCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="stagesearch-cache-bench-") as cache:
        os.environ["STAGESEARCH_CACHE"] = cache
        try:
            manifest, generate_s = _timed(lambda: resolve_manifest(None, args.patients))
            prepared, first_s = _timed(lambda: prepare_cohort(manifest, folds=args.folds))
            seconds = [
                _timed(lambda: prepare_cohort(manifest, folds=args.folds))[1] for _ in range(args.repeats)
            ]
            second_s = median(seconds)
            opened = files_opened_under(Path(manifest).parent, lambda: a_trial(prepared))
        finally:
            if before is None:
                os.environ.pop("STAGESEARCH_CACHE", None)
            else:
                os.environ["STAGESEARCH_CACHE"] = before
    speedup = first_s / second_s
    rows = [
        {"step": "generate phantom", "seconds": generate_s},
        {"step": "first preparation (preprocess into the cache)", "seconds": first_s},
        {"step": f"second preparation (median of {args.repeats})", "seconds": second_s},
    ]
    print(table(rows))
    print(f"\nsecond preparation {speedup:.0f}x faster (target >= {TARGET_SPEEDUP:g}x)")
    print(f"scan files opened by a trial: {len(opened)}" + (f" (e.g. {opened[0]})" if opened else ""))
    path = write_result(
        "cache",
        {
            "settings": {"patients": args.patients, "repeats": args.repeats},
            "rows": rows,
            "second_runs_s": seconds,
            "speedup": speedup,
            "target": TARGET_SPEEDUP,
            "met": speedup >= TARGET_SPEEDUP and not opened,
            "trial_opened_scan_files": opened,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0 if not opened else 1


if __name__ == "__main__":
    raise SystemExit(main())
