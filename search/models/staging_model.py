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
    """The winning candidate's fold models: one trial's, the deep ensemble of several trials', or the radiomics
    model's (`trainers.ensemble.load_ensemble`)."""

    def load_context(self, context: Any) -> None:
        from trainers.ensemble import load_ensemble

        self.ensemble = load_ensemble(context.artifacts["ensemble"])

    @property
    def threshold(self) -> float:
        """The operating threshold recorded at registration (P(T2) >= it is staged T2); `mlflow models serve`
        and `stagesearch predict` both stage with it, as `predict` below does."""
        return float(self.ensemble.threshold)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Columns image (path), optional mask (path) and patient_id; returns patient_id, p_t2, stage.

        A row without a patient_id is named by its image file (`case_a_t2.nii.gz` -> `case_a_t2`). Several scans of
        one patient give one row: the mean of their probabilities, staged at the ensemble's threshold. Unusable
        inputs raise MlflowException(INVALID_PARAMETER_VALUE): `mlflow models serve` answers it as HTTP 400 with
        this message (naming each file and what is wrong with it), where any other exception would become a
        generic "unexpected error" with the reason buried in a stack trace.
        """
        from mlflow.exceptions import MlflowException

        from trainers.metrics import patient_means
        from trainers.radiomics_model import MissingMaskError

        scans = self._scans(model_input)
        try:
            scores = self.ensemble.predict_scans(scans, device="auto")
        except MissingMaskError as exc:  # a mask-trained radiomics model: say which rows lack one
            raise MlflowException.invalid_parameter_value(f"cannot predict: {exc}") from None
        ids, probs = patient_means([s.patient_id for s in scans], scores)
        threshold = self.threshold
        return pd.DataFrame(
            {"patient_id": ids, "p_t2": probs, "stage": [STAGES[int(p >= threshold)] for p in probs]}
        )

    @staticmethod
    def _scans(model_input: pd.DataFrame) -> list[Any]:
        """The rows as scans, or one MlflowException listing every problem (missing or unreadable files...)."""
        from mlflow.exceptions import MlflowException

        from trainers.io import patient_id_from_path
        from trainers.manifest import Scan, check_scan_files

        scans, problems = [], []
        for i, row in enumerate(model_input.to_dict(orient="records")):
            image = _text(row.get("image"))
            mask = Path(_text(row.get("mask"))) if _text(row.get("mask")) else None
            pid = _text(row.get("patient_id")) or (patient_id_from_path(image) if image else f"row {i + 1}")
            if not image:
                problems.append(f"{pid}: no image path given")
                continue
            problems += [f"{pid}: {p}" for p in check_scan_files(Path(image), mask)]
            scans.append(Scan(pid, Path(image), mask, -1, None))
        if problems or not scans:
            found = problems or ["no rows to predict"]
            raise MlflowException.invalid_parameter_value("cannot predict: " + "; ".join(found))
        return scans


def _text(value: Any) -> str:
    """A cell as text, "" for a missing one (None, NaN, blank)."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


mlflow.models.set_model(StagingModel())
