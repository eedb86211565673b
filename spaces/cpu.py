"""The study's seven backbone families at low resolutions and few epochs, sized for a CPU-only machine."""

from __future__ import annotations

from typing import Any

from spaces._families import HRNET_STRIDE, STUDY_BACKBONES, VIT_PATCH, study_space

DESCRIPTION = "seven study backbones, 64-96 px, lr 1e-5..3e-3, aug 0..1 (CPU-sized)"
BACKBONES = list(STUDY_BACKBONES.values())
MAX_EPOCHS = 8
RESOLUTIONS = [64, 96]  # multiples of the ViT patch (16) and of HRNet's stride (32)
assert all(r % VIT_PATCH == 0 and r % HRNET_STRIDE == 0 for r in RESOLUTIONS)


def space(trial: Any) -> dict[str, Any]:
    """Define-by-run space like `paper`, with small inputs and a fixed batch size."""
    return study_space(trial, RESOLUTIONS, [16], [1])
