"""No usage telemetry by default: a tool that handles patient data does not report to third parties.

MLflow looks up its telemetry configuration on the network when a run starts, huggingface_hub sends usage
data with its requests, and Ray collects usage statistics. Each is turned off unless the user's environment
already says otherwise (a user may opt in by setting the variable).
"""

from __future__ import annotations

import os

TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Not telemetry, but set at the same early moment for the same reason (before MLflow is imported): MLflow's
    # tqdm "Downloading artifacts" bar would otherwise draw on the console when a model is loaded or logged.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def no_telemetry() -> None:
    """Set the variables that turn the libraries' telemetry off, where the user has not set them."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
