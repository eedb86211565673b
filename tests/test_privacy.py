"""Telemetry of MLflow, huggingface_hub and Ray is off unless the user set it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainers.privacy import TELEMETRY_OFF, no_telemetry


def test_no_telemetry_sets_what_the_user_left_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TELEMETRY_OFF:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user opted in: kept
    no_telemetry()
    import os

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def test_every_command_runs_without_telemetry(tmp_path) -> None:
    """`stagesearch <command>` turns it off before the command's module is imported."""
    code = (
        "import os, sys\n"
        "from stagesearch import cli\n"
        "cli.COMMANDS['env'] = cli.Command('json', '')\n"  # a module whose import is harmless
        "import json; json.main = lambda argv: print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'), "
        "os.environ.get('HF_HUB_DISABLE_TELEMETRY')) or 0\n"
        "sys.exit(cli.main(['env']))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in TELEMETRY_OFF}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["true", "1"]
