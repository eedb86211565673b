"""The frozen configuration of one cross-validated training run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; the search samples these fields."""

    backbone: str = "resnet10t"
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 16
    epochs: int = 10
    aug_strength: float = 0.3
    resolution: int = 64
    channels: int = 1
    pretrained: bool = False
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    precision: str = "auto"  # auto: bf16 autocast + channels_last on CUDA, fp32 on the CPU; fp32: always fp32

    def __post_init__(self) -> None:
        problems = []
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if not 0.0 <= self.aug_strength <= 1.0:
            problems.append(f"aug_strength must be in [0, 1] (got {self.aug_strength})")
        if self.resolution < 16:
            problems.append(f"resolution must be >= 16 px (got {self.resolution})")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3 (got {self.channels})")
        if self.precision not in ("auto", "fp32"):
            problems.append(f"precision must be 'auto' or 'fp32' (got {self.precision!r})")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and tracking."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys that are not config fields (e.g. search bookkeeping)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
