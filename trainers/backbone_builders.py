"""Builders of the registry's backbones that are not a plain `timm.create_model` (trainers.backbones registers them).

Each is ``builder(in_chans, num_classes, img_size, weights) -> nn.Module`` with ``weights`` a local file or None.
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn


def fresh_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier of a timm EfficientNet-style model (FBNet) by one with PyTorch's default init.

    timm initialises those classifiers the TensorFlow way, uniform in +-1/sqrt(out_features): right for 1,000
    ImageNet classes, but for 2 classes it is +-0.71 over ~2,000 features, so the first logits have a standard
    deviation of about 12 and the loss starts near 8. FBNet learned nothing at the trainer's settings because
    of it (cv_auc 0.50 after 8 epochs; docs/PERFORMANCE.md). The head is trained from scratch either way.
    """
    model.reset_classifier(num_classes)
    return model


def shufflenet_url() -> str:
    """Download URL of torchvision's ImageNet ShuffleNetV2 x1.0 weights (the driver downloads it; trials only
    look for its file name in torch hub's checkpoints)."""
    from torchvision.models import ShuffleNet_V2_X1_0_Weights

    return ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.url


def build_shufflenet(
    in_chans: int, num_classes: int, img_size: int | None, weights: Path | None
) -> nn.Module:
    """torchvision ShuffleNetV2 x1.0 with its stem adapted to ``in_chans`` and a new classifier."""
    from torchvision.models import shufflenet_v2_x1_0

    model = shufflenet_v2_x1_0(weights=None)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    stem = model.conv1[0]
    if in_chans != stem.in_channels:
        new_stem = nn.Conv2d(
            in_chans,
            stem.out_channels,
            kernel_size=stem.kernel_size,
            stride=stem.stride,
            padding=stem.padding,
            bias=False,
        )
        if weights is not None:  # in_chans=1: RGB kernels summed, as timm does for its models
            with torch.no_grad():
                new_stem.weight.copy_(adapt_input_conv(in_chans, stem.weight.detach()))
        model.conv1[0] = new_stem
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def build_densenet_small(
    in_chans: int, num_classes: int, img_size: int | None, weights: Path | None
) -> nn.Module:
    """A DenseNet a quarter of DenseNet-121's depth and half its growth (0.6 M parameters; no ImageNet weights):
    growth 16, dense blocks of 3-6-12-8 layers, 32 stem features (twice the growth). timm's DenseNet class."""
    from timm.models.densenet import DenseNet

    return DenseNet(growth_rate=16, block_config=(3, 6, 12, 8), in_chans=in_chans, num_classes=num_classes)


def build_fbnetc_050(
    in_chans: int, num_classes: int, img_size: int | None, weights: Path | None
) -> nn.Module:
    """FBNet-C at half width (channel multiplier 0.5, 1.2 M parameters; no ImageNet weights), timm's generator,
    with its identity blocks' residual branches starting at zero (`zero_init_identity_blocks`)."""
    from timm.models.efficientnet import _gen_fbnetc

    model = _gen_fbnetc("fbnetc_100", 0.5, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    return zero_init_identity_blocks(fresh_classifier(model, num_classes))


def zero_init_identity_blocks(model: nn.Module) -> nn.Module:
    """Zero the last BatchNorm's scale in every inverted-residual block with an identity shortcut, so each such
    block starts as the identity (Goyal et al. 2017; timm does this for its ResNets and RegNets, not for its
    EfficientNet-style models).

    Without it the 15 identity blocks of FBNet-C (of 21) each add a unit-variance branch to the residual
    stream, and in training mode the gradient grows about 700-fold from the classifier back to the stem at
    32 px (the stem's weight gradient 158 against 4 for ResNet-10-T): the training loss stayed near chance
    (0.74 -> 0.70 in 8 epochs) and cv_auc at 0.52-0.61. The 6 blocks that change width or stride have no
    shortcut and keep their branch, so at initialisation the network is stem, 6 blocks and head
    (docs/PERFORMANCE.md).
    """
    from timm.models._efficientnet_blocks import InvertedResidual

    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual) and m.has_skip]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no inverted-residual block with an identity shortcut")
    for block in blocks:
        nn.init.zeros_(block.bn3.weight)
    return model


class TinyCNN(nn.Module):
    """Three-conv CNN (about 6k parameters) so tests and smoke runs are fast on a CPU."""

    def __init__(self, in_chans: int = 1, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [in_chans, width, 2 * width, 4 * width]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers[:-1])  # no pooling after the last conv
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_tiny_cnn(in_chans: int, num_classes: int, img_size: int | None, weights: Path | None) -> nn.Module:
    """Builder for TinyCNN (never pretrained)."""
    return TinyCNN(in_chans, num_classes)
