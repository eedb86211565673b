"""A fold-model ensemble's P(T2) per scan is the mean over its models of the mean over the scan's slices,
whether the scans' slices go through a model one scan at a time or many scans together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers import ensemble as ens
from trainers.backbones import create_backbone
from trainers.config import TrainConfig
from trainers.data import roi_tensor
from trainers.preprocess import PreprocessParams, ScanROI
from trainers.train import predict_slices


@pytest.mark.parametrize("group", [1, 7, 256])
def test_grouped_prediction_is_the_per_scan_definition(group: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(backbone="tiny_cnn", epochs=1, resolution=16, lr=1e-3, num_threads=1)
    models = [
        create_backbone("tiny_cnn", in_chans=cfg.channels, num_classes=2, img_size=16).model for _ in "ab"
    ]
    rng = np.random.default_rng(1)
    rois = [
        ScanROI(f"P{i:02d}", i % 2, rng.normal(size=(k, 3, 24, 24)).astype(np.float16), np.ones(k))
        for i, k in enumerate([1, 5, 9, 2, 12, 3, 1, 8])
    ]
    monkeypatch.setattr(ens, "GROUP_SLICES", group)
    got = ens.Ensemble(models, cfg, PreprocessParams()).predict_rois(rois)
    device = torch.device("cpu")
    expected = [
        np.mean([predict_slices(m, roi_tensor(r, 16, cfg.channels), device).mean() for m in models])
        for r in rois
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert ens.Ensemble(models, cfg, PreprocessParams()).predict_rois([]).shape == (0,)
