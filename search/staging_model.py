"""The registered staging model (MLflow "models from code"): a table of scans in, P(T2) and stage out.

MLflow saves this file with the model and bundles `trainers/` beside it, so the model preprocesses new scans
with the very code that prepared the training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

STAGES = {0: "T1", 1: "T2"}


class StagingModel(PythonModel):
    """Ensemble of the winning configuration's fold models."""

    def load_context(self, context: Any) -> None:
        from trainers.ensemble import Ensemble

        self.ensemble = Ensemble.load(context.artifacts["ensemble"])

    @property
    def threshold(self) -> float:
        """The operating threshold recorded at registration (P(T2) >= it is staged T2); `mlflow models serve`
        and `stagesearch predict` both stage with it, as `predict` below does."""
        return float(self.ensemble.threshold)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Columns image (path), optional mask (path) and patient_id; returns patient_id, p_t2, stage.

        Several scans of one patient give one row: the mean of their probabilities, staged at the ensemble's
        threshold.
        """
        from trainers.manifest import Scan, check_scan_files
        from trainers.metrics import patient_means

        rows = model_input.to_dict(orient="records")
        scans, problems = [], []
        for i, row in enumerate(rows):
            pid = str(row.get("patient_id") or f"row{i + 1}")
            image = Path(str(row["image"]))
            mask = Path(str(row["mask"])) if isinstance(row.get("mask"), str) and row["mask"] else None
            problems += [f"{pid}: {p}" for p in check_scan_files(image, mask)]
            scans.append(Scan(pid, image, mask, -1, None))
        if problems:
            raise ValueError("cannot predict:\n  - " + "\n  - ".join(problems))
        ids, probs = patient_means([s.patient_id for s in scans], self.ensemble.predict_scans(scans, device="auto"))
        threshold = self.threshold
        return pd.DataFrame(
            {"patient_id": ids, "p_t2": probs, "stage": [STAGES[int(p >= threshold)] for p in probs]}
        )


mlflow.models.set_model(StagingModel())
