"""Two small backbones at low resolutions: for tests and smoke runs."""

from __future__ import annotations

from typing import Any

DESCRIPTION = "tiny_cnn / resnet10t, 32-48 px (tests and smoke runs)"
BACKBONES = ["tiny_cnn", "resnet10t"]
MAX_EPOCHS = 2


def space(trial: Any) -> dict[str, Any]:
    """Define-by-run space small enough to run a handful of trials on a CPU in a minute."""
    return {
        "backbone": trial.suggest_categorical("backbone", BACKBONES),
        "resolution": trial.suggest_categorical("resolution", [32, 48]),
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 1.0),
        "weight_decay": 1e-4,
        "batch_size": 16,
        "channels": 1,
    }
