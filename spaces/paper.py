"""The study's comparison, searched: seven backbone families at clinical input resolutions (GPU-sized)."""

from __future__ import annotations

from spaces._families import STUDY_BACKBONES
from spaces.base import Space

SPACE = Space(
    name="paper",
    purpose="seven study backbones, GPU-sized",
    backbones=tuple(STUDY_BACKBONES.values()),
    resolutions=(128, 160, 192, 224, 256),
    max_epochs=30,
    batch_sizes=(16, 32),
    channels=(1, 3),
)
