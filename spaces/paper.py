"""The study's comparison, searched: seven backbone families at clinical input resolutions (GPU-sized)."""

from __future__ import annotations

from typing import Any

from spaces._families import HRNET_STRIDE, STUDY_BACKBONES, VIT_PATCH, study_space

DESCRIPTION = "seven study backbones, 128-256 px, lr 1e-5..3e-3, aug 0..1 (GPU-sized)"
BACKBONES = list(STUDY_BACKBONES.values())
MAX_EPOCHS = 30
RESOLUTIONS = [128, 160, 192, 224, 256]  # multiples of the ViT patch (16) and of HRNet's stride (32)
assert all(r % VIT_PATCH == 0 and r % HRNET_STRIDE == 0 for r in RESOLUTIONS)


def space(trial: Any) -> dict[str, Any]:
    """Define-by-run space over backbone, resolution, learning rate, augmentation and regularisation."""
    return study_space(trial, RESOLUTIONS, [16, 32], [1, 3])
