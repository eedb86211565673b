"""The feature sets a radiomics candidate may read, named once for the trainers, the radiomics space and the
texts (imports nothing, so the torch-free statistics and the dashboards may use it too)."""

from __future__ import annotations

from typing import Any

FEATURE_SETS = ("handmade", "ibsi", "both")  # "ibsi" and "both" need a tumour mask on every scan
DEFAULT_FEATURES = "handmade"  # what a configuration without `features` (older studies, the baseline) reads
FEATURE_WORDS = {
    "handmade": "hand-made features",
    "ibsi": "IBSI features (PyRadiomics)",
    "both": "hand-made and IBSI features (PyRadiomics)",
}


def features_of(config: dict[str, Any] | None) -> str:
    """The feature set a classifier configuration reads (None: the baseline's)."""
    return str((config or {}).get("features", DEFAULT_FEATURES))


def feature_words(config: dict[str, Any] | None) -> str:
    """The feature set of a configuration in words: "hand-made features", ..."""
    return FEATURE_WORDS.get(features_of(config), features_of(config))
