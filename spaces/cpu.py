"""The study's seven backbone families at low resolutions and few epochs, sized for a CPU-only machine."""

from __future__ import annotations

from spaces._families import STUDY_BACKBONES
from spaces.base import Space

SPACE = Space(
    name="cpu",
    purpose="seven study backbones, CPU-sized",
    backbones=tuple(STUDY_BACKBONES.values()),
    resolutions=(64, 96),
    max_epochs=8,
)
