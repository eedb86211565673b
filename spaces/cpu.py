"""The study's seven backbone families as their smallest members at 32 px, sized for a CPU-only machine.

Sized by measurement (docs/PERFORMANCE.md): on the phantom 32 px scores as well as 64 px, and the families'
usual members cost 3-6x more per epoch on one core than these. Every family stays searchable; the
leaderboard names the variant. The `paper` space has the study's own members and clinical resolutions.
"""

from __future__ import annotations

from spaces.base import Space

CPU_BACKBONES: tuple[str, ...] = (
    "densenet_small",  # DenseNet: growth 16, blocks 3-6-12-8
    "fbnetc_050",  # FBNet-C at half width
    "hrnet_w18_small",  # HRNet: the smallest of timm's HRNets
    "regnetx_002",  # RegNet: 200 MF
    "resnet10t",  # ResNet: ResNet-10-T
    "shufflenet_v2_x1_0",  # ShuffleNet: the study's own
    "vit_tiny_patch16_224",  # ViT: ViT-Tiny, 4 patches at 32 px
)

SPACE = Space(
    name="cpu",
    purpose="seven study families, smallest members, CPU-sized",
    backbones=CPU_BACKBONES,
    resolutions=(32,),
    max_epochs=8,
)
