"""Backbone registry: maps a model name to a builder so the search can pick architectures by name."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from trainers.backbone_builders import (
    build_densenet_small,
    build_fbnetc_050,
    build_shufflenet,
    build_tiny_cnn,
    fresh_classifier,
    shufflenet_url,
)

#: builder(in_chans, num_classes, img_size, weights) -> nn.Module; ``weights`` is a local file or None.
Builder = Callable[[int, int, "int | None", "Path | None"], nn.Module]
#: locator() -> (local weights file or None, human-readable reason when None).
Locator = Callable[[], "tuple[Path | None, str]"]


class UnknownBackboneError(KeyError, ValueError):
    """Raised for a backbone name that is not registered (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:
        """Show the plain message instead of KeyError's quoted repr."""
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: its family, how to build it and which input sizes it accepts."""

    name: str
    family: str
    builder: Builder
    patch_size: int | None = None
    tiny: bool = False
    min_resolution: int = 32
    size_multiple: int | None = None
    locate_weights: Locator | None = None
    weights_url: Callable[[], str] | None = (
        None  # torch hub URL of weights timm does not know (trainers.pretrained)
    )
    #: how the random initialisation differs from the library's own (empty: as the library builds it); recorded
    #: in every randomly initialised model's note, so a trial says which initialisation it trained from
    init_change: str = ""

    @property
    def resolution_multiple(self) -> int | None:
        """Number the input size must be divisible by (ViT patch size, HRNet's total stride), if any."""
        return self.patch_size or self.size_multiple

    def __post_init__(self) -> None:
        """Reject a missing family and nonsensical sizes early, at registration time."""
        if not isinstance(self.family, str) or not self.family.strip():
            raise ValueError(f"family of {self.name!r} must be a non-empty name, got {self.family!r}")
        for field_name in ("patch_size", "size_multiple"):
            value = getattr(self, field_name)
            if value is not None and value <= 0:
                raise ValueError(f"{field_name} of {self.name!r} must be positive, got {value}")
        if self.min_resolution <= 0:
            raise ValueError(f"min_resolution of {self.name!r} must be positive, got {self.min_resolution}")


@dataclass
class BuiltModel:
    """A freshly built model plus whether pretrained weights were really loaded (recorded with the trial)."""

    model: nn.Module
    pretrained: bool
    note: str


BACKBONES: dict[str, BackboneSpec] = {}
_WARNED_NO_WEIGHTS: set[str] = set()


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry so it becomes searchable (and tested) by name."""
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    """Look up a registered backbone, naming the known ones when the name is wrong."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}"
        ) from None


def families() -> list[str]:
    """Families of the registered backbones, in registration order (a new family is one registration away)."""
    return list(dict.fromkeys(spec.family for spec in BACKBONES.values()))


def list_backbones(family: str | None = None, include_tiny: bool = True) -> list[str]:
    """Registered names (registration order), optionally of one family and without the test-only models."""
    if family is not None and family not in families():
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(families())}")
    return [
        spec.name
        for spec in BACKBONES.values()
        if (family is None or spec.family == family) and (include_tiny or not spec.tiny)
    ]


def family_of(name: str) -> str:
    """Architecture family of a backbone, used to group results like the reference study."""
    return get_spec(name).family


def check_resolution(name: str, resolution: int) -> None:
    """Raise ValueError when a backbone cannot run at this input size (patch size or minimum size)."""
    spec = get_spec(name)
    if resolution < spec.min_resolution:
        raise ValueError(f"{name} needs inputs of at least {spec.min_resolution} px, got {resolution}")
    multiple = spec.resolution_multiple
    if multiple is not None and resolution % multiple != 0:
        why = (
            f"uses {multiple}-px patches" if spec.patch_size else f"fuses branches down to stride {multiple}"
        )
        raise ValueError(f"{name} {why}, so the resolution must be divisible by {multiple}; got {resolution}")


def create_backbone(
    name: str,
    in_chans: int = 1,
    num_classes: int = 2,
    pretrained: bool = False,
    img_size: int | None = None,
) -> BuiltModel:
    """Build a backbone; with ``pretrained`` use locally cached ImageNet weights, never the network (the search's
    driver downloads them once beforehand, `trainers.pretrained`)."""
    spec = get_spec(name)
    if in_chans < 1 or num_classes < 1:
        raise ValueError(f"in_chans and num_classes must be >= 1, got {in_chans} and {num_classes}")
    if img_size is not None:
        check_resolution(name, img_size)
    if not pretrained:
        model = spec.builder(in_chans, num_classes, img_size, None)
        return BuiltModel(model, False, _random_note(spec, "pretrained weights not requested"))

    if spec.locate_weights is None:
        weights, reason = None, "no ImageNet weights exist for this model"
    else:
        weights, reason = spec.locate_weights()
    if weights is not None:
        try:
            model = spec.builder(in_chans, num_classes, img_size, weights)
            return BuiltModel(model, True, f"ImageNet weights loaded from {weights}")
        except Exception as exc:  # a corrupt or mismatched local file must not kill the trial
            reason = f"loading {weights} failed: {type(exc).__name__}: {exc}"
    _warn_once(name, reason)
    model = spec.builder(in_chans, num_classes, img_size, None)
    note = f"pretrained weights unavailable ({reason}); random init"
    return BuiltModel(model, False, f"{note}; {spec.init_change}" if spec.init_change else note)


def _random_note(spec: BackboneSpec, why: str) -> str:
    """The note of a randomly initialised model: why random, and the registry's change to the init if any."""
    return f"random initialisation ({why}{'; ' + spec.init_change if spec.init_change else ''})"


def _warn_once(name: str, reason: str) -> None:
    """Warn one time per backbone per process that it falls back to random initialisation."""
    if name in _WARNED_NO_WEIGHTS:
        return
    _WARNED_NO_WEIGHTS.add(name)
    warnings.warn(
        f"pretrained ImageNet weights for {name} are not available locally ({reason}); "
        "continuing from random initialisation",
        UserWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------- local weight lookup


def hf_hub_cache() -> Path:
    """Hugging Face hub cache folder, read from the environment at call time (not at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    hf_home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(hf_home).expanduser() / "hub"


def torch_checkpoints() -> Path:
    """torch.hub checkpoint folder (honours TORCH_HOME at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _timm_locator(model_name: str) -> Locator:
    """Find a timm model's default ImageNet weights in the HF cache or torch.hub checkpoints, offline."""

    def locate() -> tuple[Path | None, str]:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(model_name)
        if cfg is None:
            return None, f"timm has no pretrained config for {model_name}"
        hf_cache = hf_hub_cache()
        if cfg.hf_hub_id:
            repo_id, _, revision = cfg.hf_hub_id.partition("@")
            filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
            filenames += ["model.safetensors", "pytorch_model.bin"]
            for filename in filenames:
                hit = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache, revision=revision or None)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit), ""
        checkpoints = torch_checkpoints()
        if cfg.url:
            candidate = checkpoints / os.path.basename(cfg.url)
            if candidate.is_file():
                return candidate, ""
        return None, f"not in the Hugging Face cache {hf_cache} nor in {checkpoints}"

    return locate


def _timm_builder(
    model_name: str,
    takes_img_size: bool = False,
    fresh_head: bool = False,
    model_kwargs: dict[str, object] | None = None,
) -> Builder:
    """Builder for a timm model; local weights go through timm so first-conv/classifier adaptation applies.
    ``fresh_head`` re-creates the classifier with PyTorch's default init (see `fresh_classifier`);
    ``model_kwargs`` go to the model's constructor (e.g. its initialisation options)."""

    def build(in_chans: int, num_classes: int, img_size: int | None, weights: Path | None) -> nn.Module:
        kwargs: dict[str, object] = {"in_chans": in_chans, "num_classes": num_classes, **(model_kwargs or {})}
        if takes_img_size and img_size is not None:
            kwargs["img_size"] = img_size
        if weights is not None:
            overlay: dict[str, object] = {"file": str(weights)}
            if weights.suffix != ".npz":  # ViT's custom loader is only for the original .npz checkpoints
                overlay["custom_load"] = False
            kwargs["pretrained_cfg_overlay"] = overlay
        model = timm.create_model(model_name, pretrained=weights is not None, **kwargs)
        return fresh_classifier(model, num_classes) if fresh_head else model

    return build


def torch_hub_locator(url: Callable[[], str]) -> Locator:
    """Find the file of a torch hub URL in torch hub's checkpoints folder, as torch hub names it, offline."""

    def locate() -> tuple[Path | None, str]:
        candidate = torch_checkpoints() / os.path.basename(url())
        if candidate.is_file():
            return candidate, ""
        return None, f"{candidate.name} not in {candidate.parent}"

    return locate


def _register_timm(
    name: str,
    family: str,
    *,
    min_resolution: int = 32,
    patch_size: int | None = None,
    size_multiple: int | None = None,
    tiny: bool = False,
    fresh_head: bool = False,
    model_kwargs: dict[str, object] | None = None,
    init_change: str = "",
) -> None:
    """Register one timm model under its timm name."""
    register_backbone(
        BackboneSpec(
            name=name,
            family=family,
            builder=_timm_builder(
                name, takes_img_size=patch_size is not None, fresh_head=fresh_head, model_kwargs=model_kwargs
            ),
            patch_size=patch_size,
            tiny=tiny,
            min_resolution=min_resolution,
            size_multiple=size_multiple,
            locate_weights=_timm_locator(name),
            init_change=init_change,
        )
    )


# The seven families of the reference study, mapped to concrete models, then the test-sized ones.
_register_timm("densenet121", "DenseNet")  # four 2x2 pools after the stem: < 32 px collapses to 0
_register_timm("fbnetc_100", "FBNet", fresh_head=True, init_change="classifier with PyTorch's default init")
_register_timm("hrnet_w18_small_v2", "HRNet", size_multiple=32)  # fails at sizes not divisible by 32
_register_timm("hrnet_w18", "HRNet", size_multiple=32)
_register_timm("regnety_008", "RegNet")
_register_timm("regnety_004", "RegNet")
_register_timm("resnet50", "ResNet50")
register_backbone(
    BackboneSpec(
        "shufflenet_v2_x1_0",
        "ShuffleNet",
        build_shufflenet,
        locate_weights=torch_hub_locator(shufflenet_url),
        weights_url=shufflenet_url,
    )
)
_register_timm("vit_small_patch16_224", "ViT", patch_size=16)
_register_timm("vit_tiny_patch16_224", "ViT", patch_size=16)
# Smaller members of the same families, for CPU-only machines (the `cpu` space; measured in docs/PERFORMANCE.md).
register_backbone(BackboneSpec("densenet_small", "DenseNet", build_densenet_small))
register_backbone(
    BackboneSpec(
        "fbnetc_050",
        "FBNet",
        build_fbnetc_050,
        init_change="classifier with PyTorch's default init; identity blocks' last BatchNorm scale zero",
    )
)
_register_timm("hrnet_w18_small", "HRNet", size_multiple=32)
# timm zero-inits the last BatchNorm of every RegNet block, also the first of each stage, whose shortcut is a
# strided 1x1 projection; at the trainer's lr those scales stayed below 0.02 in 8 epochs, so regnetx_002 trained
# as its one-conv stem plus four strided projections (cv_auc 0.675; docs/PERFORMANCE.md)
_register_timm(
    "regnetx_002",
    "RegNet",
    model_kwargs={"zero_init_last": False},
    init_change="residual branches' last BatchNorm scale one, not zero: timm's zero_init_last off",
)
_register_timm("resnet10t", "ResNet50")  # timm's ResNet-10-T: the smallest ResNet; also the tiny space's
register_backbone(BackboneSpec("tiny_cnn", "Tiny", build_tiny_cnn, tiny=True, min_resolution=8))
