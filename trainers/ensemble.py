"""The fold-model ensemble of one configuration: saved, loaded and applied to new scans.

A patient's P(T2) is the mean over the k fold models of the mean over its ROI slices, i.e. exactly how
out-of-fold predictions are made during cross-validation, with the same preprocessing code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainers.backbones import create_backbone
from trainers.config import TrainConfig
from trainers.data import roi_tensor
from trainers.manifest import Scan
from trainers.preprocess import PreprocessParams, ScanROI, preprocess_scan
from trainers.radiomics_model import RadiomicsEnsemble
from trainers.train import predict_slices, resolve_device

ENSEMBLE_FORMAT = 1
# slices of several scans predicted together (about 150 MB of float32 at 224 px, 3 channels)
GROUP_SLICES = 256


@dataclass
class Ensemble:
    """k fold models + the config and preprocessing that made their inputs."""

    models: list[nn.Module]
    config: TrainConfig
    params: PreprocessParams
    threshold: float = 0.5

    def save(self, folder: str | Path) -> Path:
        """Weights (one file per fold) and `ensemble.json`; no patient data."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, model in enumerate(self.models):
            torch.save(model.state_dict(), folder / f"fold_{i}.pt")
        meta = {
            "format": ENSEMBLE_FORMAT,
            "config": self.config.to_dict(),
            "preprocess": asdict(self.params),
            "threshold": self.threshold,
            "folds": len(self.models),
        }
        (folder / "ensemble.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Ensemble:
        """Rebuild the fold models from `save`'s folder (no network, no pretrained download)."""
        folder = Path(folder)
        meta = json.loads((folder / "ensemble.json").read_text())
        if meta.get("format") != ENSEMBLE_FORMAT:
            raise ValueError(f"{folder}: ensemble format {meta.get('format')} is not {ENSEMBLE_FORMAT}")
        cfg = TrainConfig.from_dict(meta["config"])
        params = PreprocessParams.from_dict(meta["preprocess"])
        models = []
        for i in range(meta["folds"]):
            model = create_backbone(
                cfg.backbone, in_chans=cfg.channels, num_classes=2, pretrained=False, img_size=cfg.resolution
            ).model
            model.load_state_dict(torch.load(folder / f"fold_{i}.pt", map_location="cpu", weights_only=True))
            models.append(model.eval())
        return cls(models, cfg, params, float(meta.get("threshold", 0.5)))

    def predict_rois(self, rois: Sequence[ScanROI], device: str = "auto") -> np.ndarray:
        """P(T2) per ROI set (one scan each): per fold model the mean over the scan's slices, then the mean over
        the models. The slices of several scans go through a model together (up to `GROUP_SLICES` at a time):
        a model called once per scan spends most of its time on the call, not the slices."""
        dev = resolve_device(device)
        out = []
        for group in _groups([roi_tensor(r, self.config.resolution, self.config.channels) for r in rois]):
            sizes = [len(x) for x in group]
            ends = np.cumsum(sizes)
            starts = ends - sizes
            stacked = torch.cat(group)
            per_model = []
            for model in self.models:
                slices = predict_slices(model.to(dev), stacked, dev)
                per_model.append([slices[a:b].mean() for a, b in zip(starts, ends, strict=True)])
            out.extend(np.mean(per_model, axis=0).tolist())
        return np.asarray(out, dtype=float)

    def predict_scans(self, scans: Sequence[Scan], device: str = "auto") -> np.ndarray:
        """Preprocess scans exactly as in training (no cache) and predict P(T2) per scan."""
        return self.predict_rois([preprocess_scan(s, self.params) for s in scans], device)


def _groups(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive scans' slice tensors in groups of at most `GROUP_SLICES` slices (a scan with more alone)."""
    groups: list[list[torch.Tensor]] = []
    size = GROUP_SLICES
    for x in tensors:
        if size + len(x) > GROUP_SLICES:
            groups.append([])
            size = 0
        groups[-1].append(x)
        size += len(x)
    return groups


@dataclass
class WeightedEnsemble:
    """The deep ensemble of several trials: each member (one trial's fold-model `Ensemble`) predicts P(T2), and
    the patient's P(T2) is their mean weighted by the members' weights (1 each for the search's ensemble, more
    for one chosen by greedy selection in an earlier version), exactly how its out-of-fold predictions were
    combined. Every member preprocesses with the same code and
    parameters (each resizes the ROI to its own resolution)."""

    members: list[Ensemble]
    weights: list[float]
    threshold: float = 0.5

    @property
    def params(self) -> PreprocessParams:
        return self.members[0].params

    @property
    def models(self) -> list[nn.Module]:
        """Every member's fold models."""
        return [m for member in self.members for m in member.models]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        for i, member in enumerate(self.members):
            member.save(folder / f"member_{i}")
        meta = {
            "format": ENSEMBLE_FORMAT,
            "kind": "weighted",
            "weights": self.weights,
            "threshold": self.threshold,
        }
        (folder / "ensemble.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> WeightedEnsemble:
        folder = Path(folder)
        meta = json.loads((folder / "ensemble.json").read_text())
        members = [Ensemble.load(folder / f"member_{i}") for i in range(len(meta["weights"]))]
        return cls(members, [float(w) for w in meta["weights"]], float(meta.get("threshold", 0.5)))

    def predict_rois(self, rois: Sequence[ScanROI], device: str = "auto") -> np.ndarray:
        probs = np.stack([member.predict_rois(rois, device) for member in self.members])
        weights = np.asarray(self.weights, dtype=float)
        return weights @ probs / weights.sum()

    def predict_scans(self, scans: Sequence[Scan], device: str = "auto") -> np.ndarray:
        return self.predict_rois([preprocess_scan(s, self.params) for s in scans], device)


def load_ensemble(folder: str | Path) -> Ensemble | WeightedEnsemble | RadiomicsEnsemble:
    """The registered model's ensemble: of one trial, of several (`WeightedEnsemble`), or the radiomics model's
    fold models (`trainers.radiomics_model`)."""
    kind = json.loads((Path(folder) / "ensemble.json").read_text()).get("kind")
    if kind == "radiomics":
        return RadiomicsEnsemble.load(folder)
    return WeightedEnsemble.load(folder) if kind == "weighted" else Ensemble.load(folder)
