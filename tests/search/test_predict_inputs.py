"""What `stagesearch predict` and the served model make of their inputs, without a model: patient ids from file
names, labels where given, the score of a labelled batch, and the error a served model answers bad input with."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

from search.models.predict import shown_digits
from search.stats.predict_scores import label_score
from trainers.io import patient_id_from_path
from trainers.manifest import ManifestError, load_manifest


def test_patient_id_from_the_file_name() -> None:
    assert patient_id_from_path("/data/P007_t2.nii.gz") == "P007_t2"
    assert patient_id_from_path("scans/P8.NII") == "P8"
    assert patient_id_from_path("P9.jpeg") == "P9"
    assert patient_id_from_path("/dicom/P010/") == "P010"  # a series folder: its name
    assert patient_id_from_path(".nii.gz") == ".nii.gz"  # never an empty id


def _write(folder: Path, header: str, rows: list[str]) -> Path:
    manifest = folder / "new.csv"
    manifest.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return manifest


def test_scans_to_predict_need_no_ids_and_keep_labels_where_given(tiny_cohort: Path, tmp_path: Path) -> None:
    base = tiny_cohort.parent
    images = [base / "images" / f"P00{i}_t2.nii.gz" for i in (1, 2, 3)]
    manifest = _write(tmp_path, "image,label", [f"{images[0]},T2", f"{images[1]},", f"{images[2]},0"])
    cohort = load_manifest(manifest, folds=2, labelled=False)
    assert [(s.patient_id, s.label) for s in cohort.scans] == [
        ("P001_t2", 1),
        ("P002_t2", -1),
        ("P003_t2", 0),
    ]
    bad = _write(tmp_path, "image,label", [f"{images[0]},T3"])
    with pytest.raises(ManifestError, match="unknown label 'T3'"):
        load_manifest(bad, folds=2, labelled=False)
    with pytest.raises(ManifestError, match="missing required column"):  # a search still needs ids and labels
        load_manifest(manifest, folds=2)


def test_label_score_auc_ci_and_confusion_matrix() -> None:
    ids = [f"p{i}" for i in range(8)]
    probs = [0.1, 0.2, 0.35, 0.6, 0.4, 0.7, 0.8, 0.9]
    labels = {f"p{i}": int(i >= 4) for i in range(7)}  # p7 has no label: not scored
    score = label_score(ids, probs, labels, threshold=0.5)
    assert (score.n, score.n_t2) == (7, 3)
    assert score.auc == pytest.approx(11 / 12)  # 11 of the 12 (T2, T1) pairs ranked right
    assert score.ci[0] <= score.auc <= score.ci[1] <= 1.0
    assert (score.tn, score.fp, score.fn, score.tp) == (3, 1, 1, 2)
    text = "\n".join(score.lines())
    assert "sensitivity 0.667 (2/3), specificity 0.750 (3/4), accuracy 0.714 (5/7)" in text
    assert text.endswith("label T1         3       1\nlabel T2         1       2")
    one_class = label_score(ids[:3], probs[:3], labels, threshold=0.5)
    assert math.isnan(one_class.auc) and "AUC: not defined" in "\n".join(one_class.lines())
    assert label_score(ids, probs, {}, 0.5) is None


def test_printed_decimals_tell_each_patient_from_the_threshold() -> None:
    assert shown_digits([0.2, 0.9], 0.5) == 4
    p, t = 0.51196, 0.511989  # a T1 patient that rounds to the threshold at 4 decimals
    digits = shown_digits([p], t)
    assert digits == 5 and f"{p:.{digits}f}" < f"{t:.{digits}f}"


def test_served_model_rejects_bad_rows_with_a_readable_parameter_error(tmp_path: Path) -> None:
    """MLflow's scoring server answers an MlflowException with its own message and status (400 for
    INVALID_PARAMETER_VALUE); the model must raise that, naming each file, not a bare exception."""
    from search.models.staging_model import StagingModel

    missing = tmp_path / "P404_t2.nii.gz"
    rows = pd.DataFrame({"image": [str(missing), np.nan], "patient_id": [np.nan, "P5"]})
    with pytest.raises(MlflowException) as exc:
        StagingModel._scans(rows)
    assert exc.value.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
    assert exc.value.get_http_status_code() == 400
    assert (
        exc.value.message
        == f"cannot predict: P404_t2: image {missing}: file not found; P5: no image path given"
    )
