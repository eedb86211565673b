"""Tests for the backbone registry: every registered name builds, runs, and handles missing weights offline."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trainers import backbones
from trainers.backbones import (
    BACKBONES,
    BackboneSpec,
    check_resolution,
    create_backbone,
    families,
    family_of,
    list_backbones,
    register_backbone,
)

ALL_NAMES = list_backbones()
STUDY_FAMILIES = {"DenseNet", "FBNet", "HRNet", "RegNet", "ResNet50", "ShuffleNet", "ViT"}


def _forward(name: str, in_chans: int, resolution: int) -> torch.Tensor:
    """Build ``name`` for ``resolution`` and return eval-mode logits for a batch of two."""
    spec = BACKBONES[name]
    built = create_backbone(
        name, in_chans=in_chans, num_classes=2, img_size=resolution if spec.patch_size else None
    )
    with torch.no_grad():
        return built.model.eval()(torch.randn(2, in_chans, resolution, resolution))


def _next_valid_resolution(name: str) -> int:
    """Smallest accepted resolution above the minimum (odd sizes for plain CNNs)."""
    start = BACKBONES[name].min_resolution + 1
    for resolution in range(start, start + 256):
        try:
            check_resolution(name, resolution)
            return resolution
        except ValueError:
            continue
    raise AssertionError(f"no valid resolution found for {name}")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty, private weight caches, fresh warn-once state, and any download attempt turned into an error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_WARNED_NO_WEIGHTS", set())

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    import huggingface_hub
    import timm.models._hub as timm_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", no_download)
    monkeypatch.setattr(timm_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path


def _put_in_hf_cache(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` where huggingface_hub's cache layout expects ``repo_id``'s model.safetensors."""
    commit = "0" * 40
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


# --------------------------------------------------------------------------- every registered name


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_builds_and_runs_at_min_resolution(name: str, in_chans: int) -> None:
    """Each backbone gives finite (2, 2) logits at its smallest supported input size."""
    logits = _forward(name, in_chans, BACKBONES[name].min_resolution)
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_runs_at_next_accepted_resolution(name: str) -> None:
    """Sizes that check_resolution accepts really work (catches undeclared stride constraints)."""
    logits = _forward(name, 1, _next_valid_resolution(name))
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_two_class_head_starts_near_chance(name: str) -> None:
    """A fresh model's training-mode logits are small, so the loss starts near log 2 (timm's TensorFlow-style
    classifier init gave FBNet logits with a standard deviation of about 12 for 2 classes, and no learning)."""
    torch.manual_seed(0)
    size = _next_valid_resolution(name)
    model = create_backbone(name, in_chans=1, img_size=size).model.train()
    logits = model(torch.randn(16, 1, size, size))
    assert logits.std().item() < 3.0, f"{name}: initial logits std {logits.std().item():.1f}"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_seeded_builds_are_identical(name: str) -> None:
    """Two builds after the same torch seed have identical weights, so trials are reproducible."""
    img_size = BACKBONES[name].min_resolution if BACKBONES[name].patch_size else None
    torch.manual_seed(0)
    first = create_backbone(name, in_chans=1, img_size=img_size).model.state_dict()
    torch.manual_seed(0)
    second = create_backbone(name, in_chans=1, img_size=img_size).model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pretrained_unavailable_falls_back_and_warns_once(name: str, offline: Path) -> None:
    """Without local weights: random init, pretrained=False with a note, and exactly one warning."""
    img_size = BACKBONES[name].min_resolution if BACKBONES[name].patch_size else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [create_backbone(name, in_chans=1, pretrained=True, img_size=img_size) for _ in range(2)]
    for built in results:
        assert built.pretrained is False
        assert "unavailable" in built.note and "random init" in built.note
    ours = [w for w in caught if f"pretrained ImageNet weights for {name} " in str(w.message)]
    assert len(ours) == 1
    assert "random initialisation" in str(ours[0].message)


# --------------------------------------------------------------------------- local weights are used


def test_timm_weights_from_hf_cache_are_loaded_and_adapted(offline: Path) -> None:
    """A cached timm checkpoint is loaded; for 1 channel the RGB stem kernels are summed."""
    import timm

    repo_id = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id
    source = timm.create_model("resnet10t", num_classes=1000).state_dict()
    path = _put_in_hf_cache(Path(os.environ["HF_HUB_CACHE"]), repo_id, source)
    built = create_backbone("resnet10t", in_chans=1, pretrained=True)
    assert built.pretrained is True
    assert str(path) in built.note
    loaded = built.model.state_dict()
    assert torch.allclose(loaded["conv1.0.weight"], source["conv1.0.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(loaded["layer3.0.conv1.weight"], source["layer3.0.conv1.weight"])
    assert loaded["fc.weight"].shape == (2, source["fc.weight"].shape[1])


def test_timm_weights_from_torch_hub_checkpoint_are_loaded(offline: Path) -> None:
    """timm weights in torch.hub's checkpoint folder (named like the release URL) are used too."""
    import timm

    url = timm.models.get_pretrained_cfg("resnet10t").url
    source = timm.create_model("resnet10t", num_classes=1000).state_dict()
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(source, checkpoints / os.path.basename(url))
    built = create_backbone("resnet10t", in_chans=3, pretrained=True)
    assert built.pretrained is True
    assert torch.equal(built.model.state_dict()["conv1.0.weight"], source["conv1.0.weight"])


def test_vit_weights_are_resampled_to_trial_resolution(offline: Path) -> None:
    """A 224-px ViT checkpoint loads into a 32-px, 1-channel ViT (position embeddings resampled)."""
    import timm

    repo_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000).state_dict()
    _put_in_hf_cache(Path(os.environ["HF_HUB_CACHE"]), repo_id, source)
    built = create_backbone("vit_tiny_patch16_224", in_chans=1, pretrained=True, img_size=32)
    assert built.pretrained is True
    weight = built.model.state_dict()["patch_embed.proj.weight"]
    assert torch.allclose(weight, source["patch_embed.proj.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    with torch.no_grad():
        assert built.model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_torchvision_shufflenet_weights_from_hub_checkpoints(offline: Path) -> None:
    """Cached torchvision ShuffleNet weights load; 1-channel stem = summed RGB kernels; 2-class head."""
    from torchvision.models import ShuffleNet_V2_X1_0_Weights, shufflenet_v2_x1_0

    source = shufflenet_v2_x1_0(weights=None).state_dict()
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(source, checkpoints / os.path.basename(ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.url))
    built = create_backbone("shufflenet_v2_x1_0", in_chans=1, pretrained=True)
    assert built.pretrained is True
    loaded = built.model.state_dict()
    assert torch.allclose(loaded["conv1.0.weight"], source["conv1.0.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(loaded["conv5.0.weight"], source["conv5.0.weight"])
    assert loaded["fc.weight"].shape == (2, 1024)


def test_corrupt_local_weights_fall_back_with_reason(offline: Path) -> None:
    """An unreadable cached file is reported in the note and warning instead of crashing the trial."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    from torchvision.models import ShuffleNet_V2_X1_0_Weights

    (checkpoints / os.path.basename(ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.url)).write_bytes(b"not weights")
    with pytest.warns(UserWarning, match="loading .* failed"):
        built = create_backbone("shufflenet_v2_x1_0", in_chans=1, pretrained=True)
    assert built.pretrained is False
    assert "failed" in built.note


# --------------------------------------------------------------------------- resolution rules and lookup


@pytest.mark.parametrize("name", list_backbones(family="ViT"))
def test_vit_rejects_resolution_not_divisible_by_patch(name: str) -> None:
    """ViT needs the resolution to be a multiple of its 16-px patch."""
    with pytest.raises(ValueError, match="divisible by 16"):
        check_resolution(name, 100)
    with pytest.raises(ValueError, match="divisible by 16"):
        create_backbone(name, img_size=100)
    check_resolution(name, 96)


def test_hrnet_and_small_inputs_are_rejected() -> None:
    """HRNet needs multiples of 32 and nothing runs below its minimum size."""
    with pytest.raises(ValueError, match="divisible by 32"):
        check_resolution("hrnet_w18_small_v2", 48)
    check_resolution("hrnet_w18_small_v2", 64)
    with pytest.raises(ValueError, match="at least 32"):
        check_resolution("densenet121", 16)


def test_families_cover_the_reference_study() -> None:
    """The non-test backbones span exactly the seven families of the reference study."""
    assert {family_of(name) for name in list_backbones(include_tiny=False)} == STUDY_FAMILIES
    assert set(families()) == STUDY_FAMILIES | {"Tiny"}
    assert family_of("shufflenet_v2_x1_0") == "ShuffleNet"
    assert set(list_backbones(family="ViT")) == {"vit_small_patch16_224", "vit_tiny_patch16_224"}
    assert set(list_backbones(family="Tiny")) == {"tiny_cnn"}
    assert family_of("resnet10t") == "ResNet50"  # the smallest ResNet, in the cpu and tiny spaces
    assert "tiny_cnn" not in list_backbones(include_tiny=False)
    with pytest.raises(ValueError):
        list_backbones(family="AlexNet")


def test_unknown_name_lists_known_names() -> None:
    """A typo fails loudly with the registered names, whether caught as KeyError or ValueError."""
    with pytest.raises(KeyError, match="densenet121"):
        create_backbone("densenet12")
    with pytest.raises(ValueError, match="resnet50"):
        family_of("resnet5")


def test_register_rejects_duplicates_and_nameless_families() -> None:
    """Registration guards against silent overrides and a missing family."""
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(BACKBONES["tiny_cnn"])
    with pytest.raises(ValueError, match="family"):
        BackboneSpec("x", " ", BACKBONES["tiny_cnn"].builder)


def test_a_new_family_is_one_registration() -> None:
    """Families come from the registrations: registering a backbone of a new family makes the family known."""
    spec = BackboneSpec(
        "tiny_cnn_copy", "AlexNet", BACKBONES["tiny_cnn"].builder, tiny=True, min_resolution=8
    )
    register_backbone(spec)
    try:
        assert families()[-1] == "AlexNet" and list_backbones(family="AlexNet") == ["tiny_cnn_copy"]
        assert family_of("tiny_cnn_copy") == "AlexNet"
    finally:
        del BACKBONES["tiny_cnn_copy"]
    assert "AlexNet" not in families()


def test_tiny_cnn_is_tiny() -> None:
    """tiny_cnn stays at a few thousand parameters so smoke runs are fast."""
    model = create_backbone("tiny_cnn", in_chans=1).model
    assert sum(p.numel() for p in model.parameters()) < 20_000
