"""`stagesearch run` with --pretrained (the default): the driver fetches the space's ImageNet weights once from a
hub on 127.0.0.1 before any trial, the trials load them from the cache (they run offline), and an unreachable
hub is said once and recorded as random init. One local Ray session for the module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import timm

from search.commands.run import main
from search.study import default_tracking_uri
from tests.search.conftest import mlflow_runs, search_args
from tests.weights_server import closed_port, loopback_only, point_hub_client_at, weights_server

REPO = "timm/resnet10t.c3_in1k"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory):
    """One hub cache for the driver and the trial workers (their environment is fixed when Ray starts, offline:
    a trial that tried to download would fail to), emptied by each test."""
    folder = tmp_path_factory.mktemp("hf") / "hub"
    before = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TORCH_HOME")}
    os.environ.update(HF_HUB_CACHE=str(folder), HF_HUB_OFFLINE="1", TORCH_HOME=str(folder.parent / "torch"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield folder
    ray.shutdown()
    for key, value in before.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture
def online_driver(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The driver (this process) online, its hub on a closed port of 127.0.0.1 until a test serves one, nothing
    beyond 127.0.0.1 reachable; the cache empty."""
    shutil.rmtree(hf_cache, ignore_errors=True)
    point_hub_client_at(monkeypatch, closed_port())
    with loopback_only(monkeypatch):
        yield hf_cache


def _args(tiny_cohort: Path, runs: Path, study: str, budget: int) -> list[str]:
    args = search_args(
        tiny_cohort,
        runs,
        study,
        "--backbones",
        "resnet10t",
        "--resolutions",
        "32",
        "--budget",
        str(budget),
        "--max-epochs",
        "1",
        "--scheduler",
        "fifo",
        "--cpus-per-trial",
        "1",
        "--no-register",
    )
    return [a for a in args if a != "--no-pretrained"]  # the default, --pretrained


def test_weights_downloaded_once_before_the_trials_and_used_by_them(
    tiny_cohort, runs, online_driver, monkeypatch, capsys
) -> None:
    with weights_server() as hub:
        point_hub_client_at(monkeypatch, hub.url)
        hub.add_hub_file(REPO, "model.safetensors", timm.create_model("resnet10t").state_dict())
        assert main(_args(tiny_cohort, runs, "fetch", budget=2)) == 0
        requests = list(hub.requests)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("weights:")]
    assert len(lines) == 2 and lines[0].startswith(
        f"weights: downloading resnet10t's ImageNet weights, {REPO}"
    )
    assert out.index("weights: downloading") < out.index("ray:")  # before any trial
    assert "note: no ImageNet weights" not in out
    assert [r.split()[0] for r in requests] == ["HEAD", "HEAD", "GET"]  # one download for two trials
    _, children = mlflow_runs(default_tracking_uri(runs), "fetch")
    assert len(children) == 2 and all(c.data.tags["pretrained"] == "true" for c in children)
    assert all(str(online_driver) in c.data.tags["pretrained_note"] for c in children)


def test_unreachable_hub_said_once_and_recorded_as_random_init(
    tiny_cohort, runs, online_driver, monkeypatch, capsys
) -> None:
    assert main(_args(tiny_cohort, runs, "nohub", budget=1)) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "ImageNet weights" in line]
    assert len(notes) == 1 and "resnet10t (not downloaded: http://127.0.0.1:" in notes[0]
    assert "is unreachable from here" in notes[0] and "pretrained=false" in notes[0]
    _, children = mlflow_runs(default_tracking_uri(runs), "nohub")
    assert [c.data.tags["pretrained"] for c in children] == ["false"]
    assert "random init" in children[0].data.tags["pretrained_note"]
