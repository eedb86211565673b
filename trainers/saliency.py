"""Where a model looks: SmoothGrad saliency maps (Captum) of P(T2) over a scan's ROI slices.

The method: the absolute gradient of P(T2) with respect to each input pixel, averaged over `SAMPLES` copies of
the slice with Gaussian noise added (SmoothGrad, Smilkov et al. 2017; Captum's `NoiseTunnel` over `Saliency`),
summed over channels, averaged over the fold models. It needs no layer of the network, so it works at any
resolution and for every family alike: at the trained 32 px the CNNs' last feature maps are 1x1, where
last-layer Grad-CAM would be constant, and ViT has no convolutional layer at all. Plain gradients depend on the
weights (they pass the model-randomisation check of Adebayo et al. 2018, which integrated gradients against a
blurred baseline and guided backpropagation pass less well on these models: their maps follow the image's
edges); the noise smooths the gradient's pixel-to-pixel scatter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trainers.preprocess import LesionROI, ScanROI

METHOD = "SmoothGrad (|dP(T2)/dx| over noisy copies, Captum NoiseTunnel + Saliency)"
SAMPLES = 16  # noisy copies per slice
NOISE = 0.15  # noise SD as a share of the slice's intensity SD


class _ProbT2(nn.Module):
    """P(T2) of a two-class model: what the map explains."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)[:, 1]


def saliency(model: nn.Module, x: torch.Tensor, seed: int = 0) -> np.ndarray:
    """SmoothGrad map (S, R, R) of one model over slices `x` (S, C, R, R), on the CPU, float32, >= 0."""
    from captum.attr import NoiseTunnel, Saliency

    model = model.eval().cpu()
    torch.manual_seed(seed)  # the noise: the same map for the same model and slices
    x = x.detach().float().clone().requires_grad_(True)
    tunnel = NoiseTunnel(Saliency(_ProbT2(model)))
    maps = tunnel.attribute(
        x, nt_type="smoothgrad", nt_samples=SAMPLES, stdevs=NOISE * float(x.std()), abs=True
    )
    return maps.detach().sum(dim=1).numpy().astype(np.float32)


def mean_saliency(
    models: Sequence[nn.Module], x: torch.Tensor, weights: Sequence[float] | None = None
) -> np.ndarray:
    """The (weighted) mean of several models' maps over the same slices: a fold-model ensemble's map."""
    w = np.ones(len(models)) if weights is None else np.asarray(weights, dtype=float)
    maps = np.stack([saliency(m, x) for m in models])
    return np.tensordot(w / w.sum(), maps, axes=1).astype(np.float32)


def lesion_share(saliency_map: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside the lesion mask (same shape; mask values in [0, 1]); nan for an empty
    map. A uniform map's share is the mask's mean."""
    total = float(saliency_map.sum())
    return float((saliency_map * mask).sum() / total) if total > 0 else float("nan")


def ensemble_map(ensemble: object, roi: ScanROI, fold: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(slices, map), both (S, R, R) at the ensemble's trained resolution (the largest of its members'), of a
    fold-model ensemble (`trainers.ensemble.Ensemble`) or of several trials' (`WeightedEnsemble`, each member's
    map resized to R and weighted as the member's P(T2) is). `fold`: only that fold's model of each member,
    the one that did not train on a patient of that fold (its out-of-fold map). Raises TypeError for a model
    without gradients (the radiomics model)."""
    from trainers.data import roi_tensor
    from trainers.ensemble import Ensemble, WeightedEnsemble

    if isinstance(ensemble, Ensemble):
        members, weights = [ensemble], [1.0]
    elif isinstance(ensemble, WeightedEnsemble):
        members, weights = list(ensemble.members), list(ensemble.weights)
    else:
        raise TypeError(f"{type(ensemble).__name__} has no saliency map: it is not a network")
    size = max(m.config.resolution for m in members)
    maps = []
    for member in members:
        x = roi_tensor(roi, member.config.resolution, member.config.channels)
        models = member.models if fold is None else [member.models[fold]]
        m = torch.as_tensor(mean_saliency(models, x))[:, None]
        if m.shape[-1] != size:
            m = torch.nn.functional.interpolate(m, size=(size, size), mode="bilinear")
        maps.append(m[:, 0].numpy())
    w = np.asarray(weights, dtype=float)
    combined = np.tensordot(w / w.sum(), np.stack(maps), axes=1).astype(np.float32)
    return roi_tensor(roi, size, 1)[:, 0].numpy(), combined


def mask_at(lesion: LesionROI, size: int) -> np.ndarray:
    """The lesion mask (S, size, size) in [0, 1] at a model's resolution (area-averaged, as the slices are
    resized); zeros where the scan has no mask."""
    m = torch.as_tensor(lesion.mask[:, None].astype(np.float32))
    return torch.nn.functional.interpolate(m, size=(size, size), mode="area")[:, 0].numpy()
