"""The radiomics model: lesion features and a scikit-learn classifier, one per cross-validation fold, saved,
loaded and applied to new scans like the deep fold models.

The features are one of `FEATURE_SETS`: the hand-made ones (`trainers.features`), PyRadiomics' IBSI-defined
ones (`trainers.ibsi`, with masks only) or both side by side. With the hand-made features and a regularised
logistic regression it is the study's baseline (scored on its folds by `search.session.baseline`); any of them,
when its selection-corrected estimate is the best, is the registered model: a new scan's P(T2) is the mean over
the k fold models of the probability from the scan's features, with the same preprocessing code as training.
Features of a patient with several scans are averaged in training; a new patient's scans are predicted one by
one and their probabilities averaged (the registered model's `patient_means`).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from trainers import ibsi
from trainers.feature_sets import DEFAULT_FEATURES, FEATURE_WORDS, features_of
from trainers.features import feature_names, feature_table, scan_features
from trainers.manifest import Scan
from trainers.preprocess import LesionROI, PreprocessParams, ScanROI, preprocess_lesion

C = 1.0  # inverse L2 strength on standardised features: fixed, so the model needs no inner search
MODEL = f"logistic regression (L2, C={C:g}) on standardised hand-made features"
RADIOMICS_FORMAT = 1


def set_names(feature_set: str, masks: bool) -> list[str]:
    """The columns of `feature_set`: hand-made ones first when both."""
    if feature_set != DEFAULT_FEATURES and not masks:
        raise ValueError(f"the {FEATURE_WORDS[feature_set]} need a tumour mask on every scan")
    hand = feature_names(masks) if feature_set in ("handmade", "both") else []
    return hand + (list(ibsi.feature_names()) if feature_set in ("ibsi", "both") else [])


def scan_row(feature_set: str, roi: ScanROI, lesion: LesionROI, masks: bool) -> list[float]:
    """One scan's features in `set_names(feature_set, masks)` order."""
    hand = scan_features(roi, lesion, masks) if feature_set in ("handmade", "both") else []
    return hand + (ibsi.measure(roi, lesion) if feature_set in ("ibsi", "both") else [])


def cohort_table(
    feature_set: str, rois: Sequence[ScanROI], lesions: Sequence[LesionROI]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, bool]:
    """(names, patients, features (P, F), labels (P,), masks) of a cohort in `feature_set`: the hand-made
    table (`trainers.features.feature_table`), the IBSI one from the feature cache, or both side by side."""
    names, patients, x, y, masks = feature_table(rois, lesions)
    if feature_set == DEFAULT_FEATURES:
        return names, patients, x, y, masks
    if not masks:
        raise ValueError(f"the {FEATURE_WORDS[feature_set]} need a tumour mask on every scan")
    ibsi_names, ibsi_patients, ibsi_x, _ = ibsi.ibsi_table(rois, lesions)
    if ibsi_patients != patients:  # both list patients in the scans' order
        raise ValueError("the hand-made and IBSI feature tables list different patients")
    if feature_set == "ibsi":
        return ibsi_names, patients, ibsi_x, y, masks
    return names + ibsi_names, patients, np.hstack([x, ibsi_x]), y, masks


def make_model(config: dict[str, Any] | None = None) -> Pipeline:
    """Median imputation (an empty mask leaves shape undefined), standardisation and the classifier of `config`
    (`spaces.radiomics_space`; None: the baseline's L2 logistic regression, C=1), seeded; everything fitted on a
    fold's training patients only."""
    config = config or {"classifier": "logistic", "C": C}
    kind = config["classifier"]
    if kind == "logistic":
        model: Any = LogisticRegression(C=float(config["C"]), max_iter=5000)
    elif kind == "random_forest":
        model = RandomForestClassifier(
            n_estimators=int(config["n_estimators"]),
            max_depth=int(config["max_depth"]),
            min_samples_leaf=int(config["min_samples_leaf"]),
            random_state=0,
            n_jobs=1,
        )
    elif kind == "hist_gb":
        model = HistGradientBoostingClassifier(
            learning_rate=float(config["learning_rate"]),
            max_depth=int(config["max_depth"]),
            max_iter=int(config["max_iter"]),
            random_state=0,
        )
    else:
        raise ValueError(f"unknown radiomics classifier {kind!r}")
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), model)


def fit_folds(
    x: np.ndarray,
    y: np.ndarray,
    patients: list[str],
    folds: list[dict[str, list[str]]],
    config: dict[str, Any] | None = None,
) -> tuple[list[Pipeline], list[dict[str, Any]]]:
    """One model per fold, trained on that fold's `train`, and the out-of-fold P(T2) of every validation patient
    (rows of the trials' OOF table: patient_id, label, prob, fold)."""
    index = {p: i for i, p in enumerate(patients)}
    missing = sorted({p for split in folds for p in split["train"] + split["val"]} - set(index))
    if missing:
        raise ValueError(f"the folds name patients without a cached ROI: {', '.join(missing[:5])}")
    models, rows = [], []
    for k, split in enumerate(folds):
        train = [index[p] for p in split["train"]]
        val = [index[p] for p in split["val"]]
        model = make_model(config).fit(x[train], y[train])
        models.append(model)
        probs = model.predict_proba(x[val])[:, 1]
        rows += [
            {"patient_id": patients[i], "label": int(y[i]), "prob": float(p), "fold": k}
            for i, p in zip(val, probs, strict=True)
        ]
    return models, rows


class MissingMaskError(ValueError):
    """A model trained on lesion features was given a scan without its tumour mask."""


@dataclass
class RadiomicsEnsemble:
    """k fold models on the features `features` (lesion features when `masks`), and the preprocessing of the
    scans they were measured on."""

    models: list[Pipeline]
    features: list[str]
    masks: bool
    params: PreprocessParams
    threshold: float = 0.5
    config: dict[str, Any] | None = None  # the classifier (`spaces.radiomics_space`; None: the baseline's)

    @property
    def feature_set(self) -> str:
        return features_of(self.config)

    def save(self, folder: str | Path) -> Path:
        """The fitted pipelines (pickled, as MLflow's scikit-learn flavour stores them) and `ensemble.json`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "models.pkl").write_bytes(pickle.dumps(self.models))
        meta = {
            "format": RADIOMICS_FORMAT,
            "kind": "radiomics",
            "model": MODEL if self.config is None else str(self.config["classifier"]),
            "classifier": self.config,
            "features": self.features,
            "masks": self.masks,
            "preprocess": asdict(self.params),
            "threshold": self.threshold,
            "feature_set": self.feature_set,
            **({"extraction": ibsi.extraction()} if self.feature_set != DEFAULT_FEATURES else {}),
        }
        (folder / "ensemble.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RadiomicsEnsemble:
        folder = Path(folder)
        meta = json.loads((folder / "ensemble.json").read_text())
        names = set_names(features_of(meta.get("classifier")), bool(meta["masks"]))
        if meta.get("format") != RADIOMICS_FORMAT or names != meta["features"]:
            raise ValueError(f"{folder}: a radiomics model of another format or feature set")
        params = PreprocessParams.from_dict(meta["preprocess"])
        models = pickle.loads((folder / "models.pkl").read_bytes())  # noqa: S301 (the model's own artifact)
        return cls(
            models,
            meta["features"],
            bool(meta["masks"]),
            params,
            float(meta["threshold"]),
            meta.get("classifier"),
        )

    @property
    def requires_mask(self) -> bool:
        return self.masks

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """P(T2) per row of features: the mean over the fold models."""
        return np.mean([m.predict_proba(np.atleast_2d(x))[:, 1] for m in self.models], axis=0)

    def predict_lesions(self, rois: Sequence[ScanROI], lesions: Sequence[LesionROI]) -> np.ndarray:
        """P(T2) per scan from its cached ROI and mask ROI."""
        x = np.asarray(
            [scan_row(self.feature_set, r, les, self.masks) for r, les in zip(rois, lesions, strict=True)]
        )
        return self.predict_features(x)

    def predict_scans(self, scans: Sequence[Scan], device: str = "auto") -> np.ndarray:
        """Preprocess scans exactly as in training (no cache) and predict P(T2) per scan (`device`: unused)."""
        lacking = [s.patient_id for s in scans if s.mask is None]
        if self.masks and lacking:
            raise MissingMaskError(
                f"this model was trained on lesion features from tumour masks; no mask was given for "
                f"{', '.join(lacking)}"
            )
        pairs = [preprocess_lesion(s, self.params) for s in scans]
        return self.predict_lesions([p[0] for p in pairs], [p[1] for p in pairs])
