"""What a search session records beside its command line in `config.json`: the sampler and early-stopping
settings it ran with and the versions of the software it ran on, so that the report's methods section can say
how the study was made without importing Ray or torch, and still say it after an upgrade."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

#: Distributions whose versions decide what a study computes (the report's methods table lists them).
SOFTWARE = (
    "stagesearch",
    "torch",
    "torchvision",
    "timm",
    "monai",
    "optuna",
    "ray",
    "mlflow",
    "numpy",
    "scikit-learn",
)


def software_versions() -> dict[str, str]:
    """Installed version of each of `SOFTWARE` (read from the package metadata, nothing imported) and Python."""
    found = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def search_settings(args: Any, max_epochs: int, startup_trials: int) -> dict[str, Any]:
    """The session's sampler and scheduler as `search.tune.tuning` builds them from these flags (the
    per-session flags that `config.json`'s settings do not hold); `startup_trials` is
    `search.tune.tuning.startup_trials` of the
    budget, passed in so that this module, which the report imports, does not import Ray."""
    record: dict[str, Any] = {"budget": args.budget, "sampler": args.sampler, "scheduler": args.scheduler}
    record["study_first"] = bool(getattr(args, "study_first", False))
    if getattr(args, "per_family", 0):
        record["per_family"] = int(args.per_family)
    if args.sampler == "tpe":
        record["startup_trials"] = startup_trials
    if args.scheduler == "asha":
        record.update(
            grace_epochs=min(args.grace_epochs, max_epochs),
            reduction_factor=args.reduction_factor,
            max_epochs=max_epochs,
        )
    return record
