"""Two small backbones at low resolutions: for tests and smoke runs."""

from __future__ import annotations

from spaces.base import Space

SPACE = Space(
    name="tiny",
    purpose="tests and smoke runs",
    backbones=("tiny_cnn", "resnet10t"),
    resolutions=(32, 48),
    max_epochs=2,
    lr=(1e-4, 3e-3),
    weight_decay=1e-4,
)
