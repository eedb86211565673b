"""The seven backbone families of the reference study (Dai et al. 2025), as concrete registry names."""

from __future__ import annotations

from typing import Any

STUDY_BACKBONES: dict[str, str] = {
    "DenseNet": "densenet121",
    "FBNet": "fbnetc_100",
    "HRNet": "hrnet_w18_small_v2",
    "RegNet": "regnety_008",
    "ResNet50": "resnet50",
    "ShuffleNet": "shufflenet_v2_x1_0",
    "ViT": "vit_small_patch16_224",
}
VIT_PATCH = 16
HRNET_STRIDE = 32  # HRNet needs input sizes divisible by 32


def study_space(
    trial: Any, resolutions: list[int], batch_sizes: list[int], channels: list[int]
) -> dict[str, Any]:
    """The study's comparison as a define-by-run space; a fixed choice when a list has one value."""

    def pick(name: str, options: list[int]) -> int:
        return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)

    return {
        "backbone": trial.suggest_categorical("backbone", list(STUDY_BACKBONES.values())),
        "resolution": pick("resolution", resolutions),
        "lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 1.0),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": pick("batch_size", batch_sizes),
        "channels": pick("channels", channels),
    }
