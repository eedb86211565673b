"""`python search/run.py --budget 200`: the Ray Tune + Optuna search over staging models (see --help)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from search.commands.run import main  # noqa: E402

if __name__ == "__main__":
    import faulthandler

    faulthandler.enable(
        all_threads=True
    )  # a crash in native code (Ray's core worker, torch) names where it was
    sys.exit(main())
