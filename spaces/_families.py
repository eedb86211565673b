"""The seven backbone families of the reference study (Dai et al. 2025), as concrete registry names."""

from __future__ import annotations

STUDY_BACKBONES: dict[str, str] = {
    "DenseNet": "densenet121",
    "FBNet": "fbnetc_100",
    "HRNet": "hrnet_w18_small_v2",
    "RegNet": "regnety_008",
    "ResNet50": "resnet50",
    "ShuffleNet": "shufflenet_v2_x1_0",
    "ViT": "vit_small_patch16_224",
}
