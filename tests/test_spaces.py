"""Every registered space: checked against the backbone registry, sampled, and each sampled model runs forward."""

from __future__ import annotations

import optuna
import pytest
import torch

from spaces import BUILTIN, SPACES, get_space, list_spaces, register_space
from spaces._families import STUDY_BACKBONES
from spaces.base import Space, space_problems
from trainers.backbones import create_backbone
from trainers.config import TrainConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_spaces_are_registered() -> None:
    assert {"paper", "cpu", "tiny"} <= set(list_spaces())
    assert all(SPACES[s.name] is s for s in BUILTIN)
    with pytest.raises(ValueError, match="known"):
        get_space("nonesuch")
    with pytest.raises(ValueError, match="already registered"):
        register_space(get_space("tiny"))


@pytest.mark.parametrize("name", list_spaces())
def test_space_agrees_with_the_backbone_registry(name: str) -> None:
    assert space_problems(get_space(name)) == []


@pytest.mark.parametrize("name", list_spaces())
def test_space_samples_run_forward(name: str) -> None:
    space = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple] = set()
    for _ in range(20):
        trial = study.ask()
        config = space.space(trial)
        study.tell(trial, 0.5)
        cfg = TrainConfig.from_dict(config)
        assert set(config) <= set(cfg.to_dict())  # every key is a training setting
        assert cfg.backbone in space.backbones and cfg.resolution in space.resolutions
        key = (cfg.backbone, cfg.channels, cfg.resolution)
        if key not in seen:
            seen.add(key)
            model = create_backbone(cfg.backbone, in_chans=cfg.channels, img_size=cfg.resolution).model.eval()
            with torch.no_grad():
                logits = model(torch.zeros(2, cfg.channels, cfg.resolution, cfg.resolution))
            assert tuple(logits.shape) == (2, 2), (key, logits.shape)
    assert len({k[0] for k in seen}) > 1  # the space really varies the backbone


def test_size_rules_come_from_each_backbone_entry() -> None:
    bad = Space(
        "bad",
        "test",
        backbones=("hrnet_w18_small_v2", "vit_tiny_patch16_224", "nonesuch"),
        resolutions=(48, 64),
        max_epochs=1,
    )
    problems = space_problems(bad)
    assert len(problems) == 2, problems  # HRNet at 48 px, and the unknown name; 64 px and the ViT are fine
    assert "hrnet_w18_small_v2" in problems[0] and "divisible by 32; got 48" in problems[0]
    assert "unknown backbone 'nonesuch'" in problems[1]


def test_narrowing_keeps_a_subset_and_names_the_flag_otherwise() -> None:
    cpu = get_space("cpu")
    narrow = cpu.narrowed(["resnet10t"], [32])
    assert narrow.backbones == ("resnet10t",) and narrow.resolutions == (32,) and narrow.lr == cpu.lr
    config = narrow.space(optuna.create_study().ask())
    assert config["backbone"] == "resnet10t" and config["resolution"] == 32
    assert cpu.narrowed().backbones == cpu.backbones
    with pytest.raises(ValueError, match=r"--backbones: tiny_cnn not in space 'cpu'.*--resolutions: 128"):
        cpu.narrowed(["resnet10t", "tiny_cnn"], [128])


def test_cpu_space_keeps_every_study_family() -> None:
    """The CPU-sized space swaps members, never families: each of the study's seven once."""
    from trainers.backbones import family_of

    families = [family_of(name) for name in get_space("cpu").backbones]
    assert sorted(families) == sorted(STUDY_BACKBONES) and len(set(families)) == 7


@pytest.mark.parametrize("name", list_spaces())
def test_study_points_are_each_backbone_at_the_trainer_defaults(name: str) -> None:
    """What `search/run.py --warm-start` queues: one point per backbone, in the space's order, every value a
    choice the space's sampler could make, the trainer's defaults where the space allows them."""
    space = get_space(name)
    points = space.study_points()
    d = TrainConfig()
    assert [p.get("backbone", space.backbones[0]) for p in points] == list(space.backbones)
    study = optuna.create_study()
    for point in points:
        study.enqueue_trial(point)
        trial = study.ask()
        sampled = space.space(trial)
        assert {k: sampled[k] for k in point} == point  # Optuna hands the queued values back as the sample
        assert sampled["lr"] == d.lr and sampled["aug_strength"] == d.aug_strength
        assert sampled["resolution"] == space.resolutions[0]


def test_study_points_clip_into_the_space_and_leave_fixed_choices_out() -> None:
    space = Space(
        name="narrow",
        purpose="test",
        backbones=("resnet10t",),
        resolutions=(32, 64),
        max_epochs=1,
        lr=(1e-3, 1e-2),
        aug_strength=(0.5, 1.0),
        weight_decay=0.0,
    )
    assert space.study_points() == [{"lr": 1e-3, "aug_strength": 0.5, "resolution": 32}]
