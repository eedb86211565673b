"""The learning-curve table's design (`bench.table`): which configurations of a space it trains (every family's
study point and a Latin hypercube over lr, augmentation strength and weight decay), at which training seeds,
and the fingerprint that tells a row trained before a family's initialisation changed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TABLE_VERSION = 1
DESIGN_SEED = 20261201  # the Latin hypercube's seed: the same design on every machine


@dataclass(frozen=True)
class TableConfig:
    """One configuration of the table: its id, backbone and sampled parameters, and whether it is a study point."""

    config_id: str
    backbone: str
    lr: float
    aug_strength: float
    weight_decay: float
    study_point: bool = False

    def params(self) -> dict[str, Any]:
        """The Optuna parameters a search would sample for it (the space's names)."""
        return {
            "backbone": self.backbone,
            "lr": self.lr,
            "aug_strength": self.aug_strength,
            "weight_decay": self.weight_decay,
        }


@dataclass(frozen=True)
class Run:
    """One training run of the table: a configuration at a training seed."""

    config: TableConfig
    seed: int

    @property
    def key(self) -> str:
        """The run's id in the result files."""
        return f"{self.config.config_id}@s{self.seed}"


def design(space: Any, per_family: int = 21, seed: int = DESIGN_SEED) -> list[TableConfig]:
    """Each family's study point, then `per_family` Latin-hypercube points over (log lr, aug, log wd)."""
    from scipy.stats import qmc

    wd = space.weight_decay if not isinstance(space.weight_decay, float) else (space.weight_decay,) * 2
    low = np.array([math.log10(space.lr[0]), space.aug_strength[0], math.log10(wd[0])])
    high = np.array([math.log10(space.lr[1]), space.aug_strength[1], math.log10(wd[1])])
    configs = []
    for point in space.study_points():
        configs.append(
            TableConfig(
                f"{point['backbone']}-study",
                point["backbone"],
                float(point["lr"]),
                float(point["aug_strength"]),
                float(point.get("weight_decay", wd[0])),
                study_point=True,
            )
        )
    for i, backbone in enumerate(space.backbones):
        unit = qmc.LatinHypercube(d=3, seed=seed + i, optimization="random-cd").random(per_family)
        for j, (lr, aug, w) in enumerate(low + unit * (high - low)):
            configs.append(
                TableConfig(
                    f"{backbone}-{j:02d}", backbone, 10**lr, float(aug), 10**w if wd[0] != wd[1] else wd[0]
                )
            )
    return configs


def plan(configs: Sequence[TableConfig], extra_seeds_per_family: int = 3, seeds: int = 2) -> list[Run]:
    """Every configuration at seed 0; the study points and the first `extra_seeds_per_family` others of each
    family also at seeds 1..seeds-1. Ordered so that a partial table covers every family evenly."""
    runs = []
    for c in configs:
        index = 0 if c.study_point else int(c.config_id.rsplit("-", 1)[1]) + 1
        extra = c.study_point or index <= extra_seeds_per_family
        for s in range(seeds if extra else 1):
            runs.append((s, index, c.backbone, Run(c, s)))
    return [r for *_, r in sorted(runs, key=lambda t: (t[0] > 0, t[1], t[2]))]


def fingerprint(backbone: str, resolution: int, channels: int) -> str:
    """A hash of the backbone's initial weights at seed 0 and its registry entry's settings: changes when its
    initialisation or a per-family default changes, so the table can tell which rows are stale."""
    import torch

    from trainers.backbones import create_backbone, get_spec

    torch.manual_seed(0)
    model = create_backbone(
        backbone, in_chans=channels, num_classes=2, pretrained=False, img_size=resolution
    ).model
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    spec = get_spec(backbone)
    settings = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if isinstance(getattr(spec, f.name), str | int | float | bool | tuple | type(None))
        and getattr(spec, f.name)
        != ""  # a field added later, left empty, leaves earlier rows' fingerprints alone
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
