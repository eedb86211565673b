"""`python dashboards/mlflow.py`: the old path of `stagesearch mlflow-ui` (the MLflow UI launcher lives in `dashboards/mlflow_ui.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(
        Path(__file__).resolve().parents[1]
    )  # not dashboards/: it would shadow the mlflow package
    from dashboards.mlflow_ui import main

    sys.exit(main())
