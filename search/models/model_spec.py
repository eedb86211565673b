"""What the registered staging model takes, gives and needs: its MLflow signature and pip requirements."""

from __future__ import annotations

from typing import Any


def requirements() -> list[str]:
    """The pip requirements of the registered model: the versions installed here."""
    from importlib.metadata import version

    names = ["torch", "torchvision", "timm", "monai", "nibabel", "pydicom", "pillow", "numpy", "pandas",
             "scikit-learn", "scipy", "scikit-image", "pyradiomics-bhklab", "mlflow"]  # fmt: skip
    return [f"{n}=={version(n)}" for n in names]


def signature() -> Any:
    """What the registered model takes (a table of scans) and gives (P(T2) and stage per patient)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "mask", required=False),
                     ColSpec("string", "patient_id", required=False)])  # fmt: skip
    outputs = Schema([ColSpec("string", "patient_id"), ColSpec("double", "p_t2"), ColSpec("string", "stage")])
    return ModelSignature(inputs=inputs, outputs=outputs)
