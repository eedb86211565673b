"""The registry's changes to a library's random initialisation: they hold, and every trial's note names them.

FBNet-C 0.5 and RegNetX-200MF learned little from timm's initialisation at the `cpu` space's study point
(32 px, the trainer's defaults; docs/PERFORMANCE.md); each test below fails with timm's own initialisation.
"""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from torch import nn

from spaces.cpu import CPU_BACKBONES
from trainers.backbones import BACKBONES, create_backbone, list_backbones


def _stem_to_body_sensitivity(model: nn.Module, seed: int) -> float:
    """|h| * |dL/dh| at the stem's output over the same at the last block's output, in training mode at 32 px:
    how much more a relative change of the early features moves the loss than one of the late features."""
    acts: dict[str, torch.Tensor] = {}

    def keep(key: str):
        def hook(module: nn.Module, inputs: object, out: torch.Tensor) -> None:
            out.retain_grad()
            acts[key] = out

        return hook

    model.bn1.register_forward_hook(keep("stem"))
    model.blocks.register_forward_hook(keep("body"))
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    nn.functional.cross_entropy(model.train()(x), torch.arange(16) % 2).backward()
    size = {k: (a.grad.norm() * a.detach().norm()).item() for k, a in acts.items()}
    return size["stem"] / size["body"]


@pytest.mark.parametrize("seed", [0, 1])
def test_fbnet_gradient_does_not_explode_towards_the_stem(seed: int) -> None:
    """With the identity blocks' residual branches starting at zero the stem is about 50x as sensitive as the
    last block; with timm's initialisation (every branch live) it was 500-800x, and the loss stayed near chance."""
    torch.manual_seed(seed)
    model = create_backbone("fbnetc_050", in_chans=1).model
    assert _stem_to_body_sensitivity(model, seed) < 150

    torch.manual_seed(seed)
    timm_init = create_backbone("fbnetc_050", in_chans=1).model
    for block in timm_init.modules():
        if getattr(block, "has_skip", False):
            nn.init.ones_(block.bn3.weight)
    assert _stem_to_body_sensitivity(timm_init, seed) > 300


def _convs_without_gradient(model: nn.Module) -> list[str]:
    """Names of conv weights whose gradient is exactly zero after one training-mode backward pass at 32 px."""
    torch.manual_seed(0)
    nn.functional.cross_entropy(model.train()(torch.randn(16, 1, 32, 32)), torch.arange(16) % 2).backward()
    return [n for n, p in model.named_parameters() if p.dim() == 4 and not p.grad.abs().max() > 0]


def test_regnet_trains_every_conv_from_the_first_step() -> None:
    """timm zero-initialises the last BatchNorm of every RegNet block, so 39 of regnetx_002's 44 convs get no
    gradient at first and, at the trainer's lr, their scales stayed below 0.02 for 8 epochs."""
    torch.manual_seed(0)
    assert _convs_without_gradient(create_backbone("regnetx_002", in_chans=1).model) == []
    torch.manual_seed(0)
    assert len(_convs_without_gradient(timm.create_model("regnetx_002", in_chans=1, num_classes=2))) > 30


def test_changed_initialisations_are_named_in_the_note() -> None:
    """A randomly initialised model's note names the registry's change to its initialisation (recorded with
    every trial); backbones built as their library builds them keep the plain note."""
    for name in list_backbones():
        spec = BACKBONES[name]
        note = create_backbone(name, in_chans=1, img_size=32 if spec.patch_size else None).note
        if spec.init_change:
            assert note == f"random initialisation (pretrained weights not requested; {spec.init_change})"
        else:
            assert note == "random initialisation (pretrained weights not requested)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fallback = create_backbone("fbnetc_050", in_chans=1, pretrained=True)
    assert fallback.note.endswith(f"; random init; {BACKBONES['fbnetc_050'].init_change}")


def test_cpu_space_members_with_a_changed_initialisation() -> None:
    """The two `cpu` space members whose initialisation differs from timm's (a learning-curve table redoes
    their rows when this set changes)."""
    assert {n for n in CPU_BACKBONES if BACKBONES[n].init_change} == {"fbnetc_050", "regnetx_002"}
