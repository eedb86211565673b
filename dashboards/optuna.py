"""`python dashboards/optuna.py`: the old path of `stagesearch dashboard` (the optuna-dashboard launcher lives in `dashboards/optuna_dashboard.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(
        Path(__file__).resolve().parents[1]
    )  # not dashboards/: it would shadow the optuna package
    from dashboards.optuna_dashboard import main

    sys.exit(main())
