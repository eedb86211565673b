"""In-memory slice tensors at a trial's resolution: the one tensor a trial moves to its device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainers.failures import UnreadableDataError
from trainers.preprocess import ScanROI


@dataclass
class SliceData:
    """All slices of a cohort at one resolution; slice i belongs to patient `patients[patient_index[i]]`."""

    x: torch.Tensor  # (N, C, R, R) float32
    patient_index: np.ndarray  # (N,)
    patients: list[str]
    patient_label: np.ndarray  # (P,) 0 = T1, 1 = T2

    def slice_labels(self) -> np.ndarray:
        """Label of every slice (its patient's stage)."""
        return self.patient_label[self.patient_index]

    def indices_of(self, patient_ids: Sequence[str]) -> np.ndarray:
        """Slice indices of the given patients."""
        wanted = {self.patients.index(p) for p in patient_ids}
        return np.flatnonzero(np.isin(self.patient_index, list(wanted)))


def roi_tensor(roi: ScanROI, resolution: int, channels: int) -> torch.Tensor:
    """One scan's cached ROI slabs as model input (S, C, R, R): centre slice or 2.5D, resized.

    Raises UnreadableDataError (naming the patient) for an array that is not k square 3-slice slabs.
    """
    shape = getattr(roi.slabs, "shape", None)
    if shape is None or len(shape) != 4 or shape[0] < 1 or shape[1] != 3 or shape[2] != shape[3]:
        raise UnreadableDataError(
            f"patient {roi.patient_id}: cached ROI array has shape {shape}, expected (k, 3, R, R); "
            "delete the preprocessing cache to rebuild it"
        )
    slabs = torch.as_tensor(roi.slabs.astype(np.float32))
    if channels == 1:
        slabs = slabs[:, 1:2]
    if slabs.shape[-1] != resolution:
        slabs = torch.nn.functional.interpolate(
            slabs, size=(resolution, resolution), mode="bilinear", antialias=True
        )
    return slabs


def build_slice_data(rois: Sequence[ScanROI], resolution: int, channels: int = 1) -> SliceData:
    """Resize cached ROI slabs to `resolution`; 1 channel = centre slice, 3 = 2.5D neighbours."""
    patients: list[str] = []
    labels: dict[str, int] = {}
    blocks, owners = [], []
    for roi in rois:
        if roi.patient_id not in labels:
            patients.append(roi.patient_id)
            labels[roi.patient_id] = roi.label
        slabs = roi_tensor(roi, resolution, channels)
        blocks.append(slabs)
        owners.extend([patients.index(roi.patient_id)] * len(slabs))
    x = torch.cat(blocks).contiguous()
    if not bool(
        torch.isfinite(x).all()
    ):  # one pass over the resized slices; names the patients only on failure
        bad = sorted(
            {
                patients[o]
                for o, ok in zip(owners, torch.isfinite(x).flatten(1).all(1).tolist(), strict=True)
                if not ok
            }
        )
        raise UnreadableDataError(
            f"cached ROI arrays with non-finite values for patient(s) {', '.join(bad)}; "
            "delete the preprocessing cache to rebuild them"
        )
    return SliceData(
        x=x,
        patient_index=np.asarray(owners),
        patients=patients,
        patient_label=np.asarray([labels[p] for p in patients]),
    )
