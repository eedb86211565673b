"""Every registered space samples 20 seeded configurations whose models build."""

from __future__ import annotations

import optuna
import pytest

from spaces import get_space, list_spaces
from trainers.backbones import check_resolution, create_backbone
from trainers.config import TrainConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_spaces_are_registered() -> None:
    assert {"paper", "cpu", "tiny"} <= set(list_spaces())
    with pytest.raises(ValueError, match="known"):
        get_space("nonesuch")


@pytest.mark.parametrize("name", list_spaces())
def test_space_samples_build(name: str) -> None:
    module = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    built: set[tuple] = set()
    for _ in range(20):
        trial = study.ask()
        config = module.space(trial)
        study.tell(trial, 0.5)
        cfg = TrainConfig.from_dict(config)  # every key is a training setting, every value valid
        assert set(config) <= set(cfg.to_dict())
        check_resolution(cfg.backbone, cfg.resolution)
        key = (cfg.backbone, cfg.channels, cfg.resolution)
        if key not in built:
            built.add(key)
            model = create_backbone(cfg.backbone, in_chans=cfg.channels, img_size=cfg.resolution).model
            assert sum(p.numel() for p in model.parameters()) > 0
    assert len({k[0] for k in built}) > 1  # the space really varies the backbone
