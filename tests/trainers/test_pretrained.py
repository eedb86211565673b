"""ImageNet weights fetched once: the real download paths (huggingface_hub, torch hub) against a server on
127.0.0.1, the cache hit that makes no request, an unreachable server said once, and offline mode."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch

from tests.weights_server import Served, closed_port, loopback_only, point_hub_client_at, weights_server
from trainers import backbones
from trainers.backbones import BACKBONES, create_backbone, torch_hub_locator
from trainers.pretrained import resolve_weights

REPO = "timm/resnet10t.c3_in1k"  # resnet10t's hub id in timm's pretrained config


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Empty private caches, online mode (the tests' default is offline) with a hub on a closed port of
    127.0.0.1 until a test serves one, fresh warn-once state; nothing beyond 127.0.0.1 can be reached."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    point_hub_client_at(monkeypatch, closed_port())
    monkeypatch.setattr(backbones, "_WARNED_NO_WEIGHTS", set())
    with loopback_only(monkeypatch):
        yield tmp_path


@pytest.fixture
def hub(caches: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A hub on 127.0.0.1 serving a (randomly initialised, then saved) resnet10t as its ImageNet weights."""
    with weights_server() as served:
        point_hub_client_at(monkeypatch, served.url)
        yield served


def _resnet10t(served: Served, filename: str = "model.safetensors") -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = timm.create_model("resnet10t").state_dict()
    served.add_hub_file(REPO, filename, state)
    return state


def test_downloads_once_and_the_model_uses_the_served_weights(hub: Served, caches: Path) -> None:
    state = _resnet10t(hub)
    lines: list[str] = []
    first = resolve_weights(["tiny_cnn", "resnet10t"], lines.append)
    assert list(first.downloaded) == ["resnet10t"] and first.missing == {
        "tiny_cnn": "none exist for this model"
    }
    assert first.downloaded["resnet10t"].is_relative_to(caches / "hf" / "hub")
    size = f"{len(hub.files[f'/{REPO}/resolve/main/model.safetensors']) / 1e6:.1f} MB"
    assert (
        lines
        == [
            f"weights: downloading resnet10t's ImageNet weights, {REPO} model.safetensors ({size}), from {hub.url}",
            lines[1],
        ]
        and lines[1].startswith(f"weights: resnet10t: {size} in ")
        and lines[1].endswith("into the Hugging Face cache")
    )
    assert [r.split()[0] for r in hub.requests] == ["HEAD", "HEAD", "GET"]

    seen = len(hub.requests)
    again: list[str] = []
    second = resolve_weights(["resnet10t"], again.append)
    assert second.cached == ["resnet10t"] and not second.downloaded and not again
    assert len(hub.requests) == seen  # the cache answered: the server was not asked

    built = create_backbone("resnet10t", in_chans=3, num_classes=2, pretrained=True)
    assert built.pretrained and str(first.downloaded["resnet10t"]) in built.note
    got = built.model.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert body and all(torch.equal(got[k], state[k]) for k in body)
    one = create_backbone("resnet10t", in_chans=1, num_classes=2, pretrained=True).model.state_dict()
    stem = (
        "conv1.0.weight"  # resnet10t's deep stem: its first conv takes the summed RGB kernels for 1 channel
    )
    assert torch.allclose(one[stem], state[stem].sum(dim=1, keepdim=True))
    assert len(hub.requests) == seen  # building the models did not ask either


def test_falls_back_to_the_bin_file_like_timm(hub: Served) -> None:
    state = _resnet10t(hub, "pytorch_model.bin")
    result = resolve_weights(["resnet10t"], lambda line: None)
    assert result.downloaded["resnet10t"].name == "pytorch_model.bin"
    assert [r.split("/")[-1] for r in hub.requests][:1] == ["model.safetensors"]  # asked first, as timm does
    got = create_backbone("resnet10t", in_chans=3, pretrained=True).model.state_dict()
    assert torch.equal(got["conv1.0.weight"], state["conv1.0.weight"])


def test_unreachable_hub_is_said_once_and_models_start_random(caches: Path, monkeypatch) -> None:
    point_hub_client_at(monkeypatch, closed_port())
    lines: list[str] = []
    result = resolve_weights(["tiny_cnn", "resnet10t", "regnety_004"], lines.append, timeout=3)
    assert (
        not lines
        and not result.downloaded
        and set(result.missing) == {"tiny_cnn", "resnet10t", "regnety_004"}
    )
    assert result.missing["resnet10t"] == result.missing["regnety_004"]
    assert (
        "is unreachable from here" in result.missing["resnet10t"]
        and "Connection refused" in result.missing["resnet10t"]
    )
    notes = result.notes()
    assert len(notes) == 1 and notes[0].count("unreachable") == 1 and "resnet10t, regnety_004 (" in notes[0]
    with pytest.warns(UserWarning, match="not available locally"):
        built = create_backbone("resnet10t", pretrained=True)
    assert not built.pretrained and "random init" in built.note


def test_offline_mode_sends_no_request(hub: Served, monkeypatch) -> None:
    _resnet10t(hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = resolve_weights(["resnet10t"], lambda line: None)
    assert result.requests_skipped and hub.requests == []
    assert "HF_HUB_OFFLINE" in result.missing["resnet10t"]


def test_torch_hub_url_downloaded_into_checkpoints_once(caches: Path, monkeypatch) -> None:
    """torchvision's ShuffleNet comes from a torch hub URL: downloaded with its hash checked, then loaded."""
    from torchvision.models import shufflenet_v2_x1_0

    torch.manual_seed(2)
    state = shufflenet_v2_x1_0(weights=None).state_dict()
    with weights_server() as served:
        buffer = __import__("io").BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        name = (
            f"shufflenetv2_x1-{hashlib.sha256(data).hexdigest()[:10]}.pth"  # torch hub's hash-prefix naming
        )
        served.files[f"/models/{name}"] = data
        url = lambda: f"{served.url}/models/{name}"  # noqa: E731
        spec = dataclasses.replace(
            BACKBONES["shufflenet_v2_x1_0"], weights_url=url, locate_weights=torch_hub_locator(url)
        )
        monkeypatch.setitem(BACKBONES, "shufflenet_v2_x1_0", spec)
        lines: list[str] = []
        result = resolve_weights(["shufflenet_v2_x1_0"], lines.append)
        assert result.downloaded["shufflenet_v2_x1_0"] == caches / "torch" / "hub" / "checkpoints" / name
        assert lines[0] == (
            f"weights: downloading shufflenet_v2_x1_0's ImageNet weights, {name} "
            f"({len(data) / 1e6:.1f} MB), from {served.url}"
        )
        assert [r.split()[0] for r in served.requests] == ["HEAD", "GET"]
        assert resolve_weights(["shufflenet_v2_x1_0"], lines.append).cached == ["shufflenet_v2_x1_0"]
        assert len(served.requests) == 2
    got = create_backbone("shufflenet_v2_x1_0", in_chans=3, pretrained=True).model.state_dict()
    assert torch.equal(got["conv1.0.weight"], state["conv1.0.weight"])


def test_a_file_that_fails_its_hash_is_not_kept(caches: Path, monkeypatch) -> None:
    with weights_server() as served:
        served.files["/models/shufflenetv2_x1-0123456789.pth"] = b"not the weights"
        url = lambda: f"{served.url}/models/shufflenetv2_x1-0123456789.pth"  # noqa: E731
        spec = dataclasses.replace(
            BACKBONES["shufflenet_v2_x1_0"], weights_url=url, locate_weights=torch_hub_locator(url)
        )
        monkeypatch.setitem(BACKBONES, "shufflenet_v2_x1_0", spec)
        result = resolve_weights(["shufflenet_v2_x1_0"], lambda line: None)
    assert result.missing["shufflenet_v2_x1_0"].startswith(
        "download failed: RuntimeError: invalid hash value"
    )
    assert not list((caches / "torch" / "hub" / "checkpoints").glob("*.pth"))


def test_a_server_that_never_answers_is_given_up_after_the_timeout_once(caches: Path, monkeypatch) -> None:
    """A server that takes the connection but never answers costs one timeout, not one per backbone."""
    import socket
    import time

    with socket.socket() as silent:  # listens (the kernel completes connections) but never accepts or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        point_hub_client_at(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        result = resolve_weights(["resnet10t", "regnety_004", "densenet121"], lambda line: None, timeout=2)
        elapsed = time.monotonic() - start
    assert 2 <= elapsed < 3.9, elapsed  # three backbones on that server: asked once
    assert len(set(result.missing.values())) == 1 and "ReadTimeout" in result.missing["resnet10t"]


def test_one_configuration_cli_fetches_before_training(hub: Served, tiny_cohort: Path, capsys) -> None:
    from trainers.cv import main

    _resnet10t(hub)
    assert (
        main(
            [
                "--manifest",
                str(tiny_cohort),
                "--backbone",
                "resnet10t",
                "--pretrained",
                "--epochs",
                "1",
                "--resolution",
                "32",
                "--folds",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.index("weights: downloading resnet10t's") < out.index(
        "ImageNet-pretrained: ImageNet weights loaded"
    )
    assert [r.split()[0] for r in hub.requests] == ["HEAD", "HEAD", "GET"]
