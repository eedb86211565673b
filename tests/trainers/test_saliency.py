"""The saliency maps (`trainers.saliency`): shape, determinism, the fold and member weighting, and the
model-randomisation check (a map must depend on the weights, not only on the image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from trainers.backbones import create_backbone
from trainers.config import TrainConfig
from trainers.cv import prepare_cohort
from trainers.data import roi_tensor
from trainers.ensemble import Ensemble, WeightedEnsemble
from trainers.preprocess import PreprocessParams, load_lesions
from trainers.saliency import ensemble_map, lesion_share, mask_at, saliency
from trainers.train import train_folds


@pytest.fixture(scope="module")
def trained(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    """(prepared cohort, lesions by patient, config, the two fold models) of a 2-fold resnet10t at 32 px."""
    prepared = prepare_cohort(tiny_cohort, folds=2, folds_path=tmp_path_factory.mktemp("s") / "folds.json")
    cfg = TrainConfig(backbone="resnet10t", epochs=2, resolution=32, lr=1e-3, num_threads=1)
    _, models = train_folds(prepared.slice_data(32, 1), prepared.folds, cfg, log=None)
    lesions = {x.patient_id: x for x in load_lesions(prepared.cohort, progress=False)}
    return prepared, lesions, cfg, models


def test_map_shape_sign_and_determinism(trained) -> None:
    prepared, _, _, models = trained
    x = roi_tensor(prepared.rois[0], 32, 1)
    first, again = saliency(models[0], x), saliency(models[0], x)
    assert first.shape == (len(x), 32, 32) and first.dtype == np.float32
    assert (first >= 0).all() and first.sum() > 0
    np.testing.assert_array_equal(first, again)  # the noise is seeded: the same model draws the same map


def test_maps_depend_on_the_weights(trained) -> None:
    """Adebayo et al. 2018: a map that barely changes when the weights are re-drawn explains the image, not the
    model. Over the cohort's slices the trained model's maps rank pixels unlike a freshly initialised one's."""
    prepared, _, cfg, models = trained
    torch.manual_seed(123)
    fresh = create_backbone(cfg.backbone, in_chans=1, num_classes=2, pretrained=False, img_size=32).model
    rho = []
    for roi in prepared.rois:
        x = roi_tensor(roi, 32, 1)
        rho.append(spearmanr(saliency(models[0], x).ravel(), saliency(fresh, x).ravel())[0])
    assert np.mean(rho) < 0.5, rho


def test_fold_and_member_maps(trained) -> None:
    prepared, lesions, cfg, models = trained
    roi = prepared.rois[0]
    one = Ensemble(models, cfg, PreprocessParams())
    x = roi_tensor(roi, 32, 1)
    slices, fold1 = ensemble_map(one, roi, fold=1)
    np.testing.assert_allclose(fold1, saliency(models[1], x), rtol=1e-6)  # fold 1's model alone
    np.testing.assert_allclose(slices, x[:, 0].numpy())
    _, both = ensemble_map(one, roi)
    np.testing.assert_allclose(both, (saliency(models[0], x) + saliency(models[1], x)) / 2, rtol=1e-5)
    # several trials: each member's map weighted as its P(T2) is
    weighted = WeightedEnsemble([Ensemble([models[0]], cfg, one.params), Ensemble([models[1]], cfg, one.params)],
                                [3.0, 1.0])  # fmt: skip
    _, mixed = ensemble_map(weighted, roi)
    np.testing.assert_allclose(
        mixed, 0.75 * saliency(models[0], x) + 0.25 * saliency(models[1], x), rtol=1e-5
    )
    mask = mask_at(lesions[roi.patient_id], 32)
    assert mask.shape == fold1.shape and 0 < mask.mean() < 1
    assert lesion_share(np.ones_like(mask), mask) == pytest.approx(float(mask.mean()), rel=1e-6)
    assert lesion_share(mask, mask) > mask.mean()
