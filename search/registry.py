"""The MLflow Model Registry of staging models: score, list and rank versions, and move aliases behind a gate.

Scores come from the version tags the registration writes: `holdout_auc` (AUC on patients no trial saw) and
`cv_auc` (the winner's cross-validated AUC, optimistic because it was selected on the same folds). A tag that
is not a finite number counts as absent.

Comparison rule: a group of versions is compared on `holdout_auc` when every one of them has it, otherwise on
`cv_auc`. A pair (current alias holder vs candidate) is the group of two, so two held-out scores are compared
with each other and never with a cv_auc; `best_version` ranks the whole registry on the metric every scored
version shares (ties go to the newer version).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

DEFAULT_MODEL_NAME = "cervical-staging"
DEFAULT_ALIAS = "champion"
HOLDOUT = "holdout_auc"
CV = "cv_auc"
METRIC_LABELS = {HOLDOUT: "holdout AUC", CV: "cv_auc"}
ALIAS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")

VersionLike = ModelVersion | Mapping[str, str]


class RegistryError(Exception):
    """A problem the user can fix: no such model or version, nothing registered or scored, a bad alias."""


class PromotionRefused(RegistryError):
    """The gate kept the current alias holder: the candidate scores lower (or cannot be compared)."""


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion did (or why it changed nothing)."""

    name: str
    alias: str
    version: int
    previous: int | None
    changed: bool
    forced: bool
    reason: str
    at: str | None
    message: str

    @property
    def uri(self) -> str:
        """The URI that loads whatever holds the alias, e.g. `models:/cervical-staging@champion`."""
        return f"models:/{self.name}@{self.alias}"


def _tags(version: VersionLike) -> Mapping[str, str]:
    return version if isinstance(version, Mapping) else (version.tags or {})


def _label(version: VersionLike) -> str:
    return f"v{version.version}" if isinstance(version, ModelVersion) else "version"


def tag_float(version: VersionLike, key: str) -> float | None:
    """A numeric version tag, or None when absent, malformed or not finite."""
    try:
        value = float(_tags(version)[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def version_score(version: VersionLike) -> tuple[str, float]:
    """("holdout_auc", x) when the version has a held-out AUC, else ("cv_auc", x); ValueError if neither."""
    for metric in (HOLDOUT, CV):
        value = tag_float(version, metric)
        if value is not None:
            return metric, value
    raise ValueError(f"{_label(version)} has neither a holdout_auc nor a cv_auc tag")


def comparison_metric(*versions: VersionLike) -> str:
    """The metric a group is compared on: holdout_auc if every version has one, else cv_auc (ValueError if missing)."""
    if all(tag_float(v, HOLDOUT) is not None for v in versions):
        return HOLDOUT
    missing = [_label(v) for v in versions if tag_float(v, CV) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} has no cv_auc tag (and not every version has a holdout_auc)")
    return CV


def score_on(version: VersionLike, metric: str) -> float:
    """The version's value of `metric` (ValueError when it has none)."""
    value = tag_float(version, metric)
    if value is None:
        raise ValueError(f"{_label(version)} has no {metric} tag")
    return value


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def get_model(client: MlflowClient, name: str) -> RegisteredModel:
    """The registered model, or RegistryError naming the models that do exist."""
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
    names = sorted(m.name for m in client.search_registered_models(max_results=50))
    known = f"registered models: {', '.join(names)}" if names else "nothing is registered yet"
    raise RegistryError(f"no registered model {name!r} ({known})")


def get_version(client: MlflowClient, name: str, version: int) -> ModelVersion:
    """One version of a model (RegistryError when the model or the version does not exist)."""
    get_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not _not_found(exc):
            raise
    known = ", ".join(f"v{v.version}" for v in _all_versions(client, name)) or "none"
    raise RegistryError(f"model {name!r} has no version {version} (versions: {known})")


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    escaped = name.replace("'", "\\'")
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{escaped}'", page_token=token)
        versions += list(page)
        token = page.token
        if not token:
            return sorted(versions, key=lambda v: int(v.version))


def _versions_or_fail(client: MlflowClient, name: str) -> tuple[RegisteredModel, list[ModelVersion]]:
    model = get_model(client, name)
    versions = _all_versions(client, name)
    if not versions:
        raise RegistryError(f"model {name!r} has no versions yet (register a study's winner first)")
    return model, versions


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_versions(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version, oldest first: version, run_id, aliases, tags, created (ISO UTC), description, source, score."""
    model, versions = _versions_or_fail(client, name)
    aliases: dict[int, list[str]] = {}
    for alias, number in sorted(model.aliases.items()):
        aliases.setdefault(int(number), []).append(alias)
    rows = []
    for v in versions:
        try:
            score: tuple[str, float] | None = version_score(v)
        except ValueError:
            score = None
        rows.append({
            "version": int(v.version), "run_id": v.run_id, "aliases": aliases.get(int(v.version), []),
            "tags": dict(v.tags or {}), "created": _iso(v.creation_timestamp), "description": v.description or "",
            "source": v.source, "score": score,
        })  # fmt: skip
    return rows


def ranking_metric(versions: Sequence[VersionLike]) -> str | None:
    """What `best_version` ranks on: holdout_auc if every scored version has one, else cv_auc (None: none scored)."""
    scored = [v for v in versions if tag_float(v, HOLDOUT) is not None or tag_float(v, CV) is not None]
    if not scored:
        return None
    return HOLDOUT if all(tag_float(v, HOLDOUT) is not None for v in scored) else CV


def best_version(client: MlflowClient, name: str) -> ModelVersion:
    """The highest-scoring version on `ranking_metric` (ties: higher cv_auc, then the newer version)."""
    _, versions = _versions_or_fail(client, name)
    metric = ranking_metric(versions)
    if metric is None:
        raise RegistryError(f"no version of {name!r} has a holdout_auc or cv_auc tag to rank it by")
    ranked = [v for v in versions if tag_float(v, metric) is not None]
    return max(ranked, key=lambda v: (score_on(v, metric), tag_float(v, CV) or 0.0, int(v.version)))


def validate_alias(alias: str) -> None:
    """RegistryError unless MLflow accepts `alias` (letters, digits, _ and -; not `latest` nor `v<N>`)."""
    if not ALIAS_NAME.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryError(
            f"invalid alias {alias!r}: use letters, digits, _ and - (not 'latest' nor a version like 'v3')"
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gate(holder: ModelVersion, candidate: ModelVersion, alias: str) -> tuple[bool, str]:
    """(candidate may replace holder, the comparison in words)."""
    h, c = f"v{holder.version}", f"v{candidate.version}"
    try:
        metric = comparison_metric(holder, candidate)
    except ValueError as exc:
        return False, f"cannot compare {c} with current @{alias} {h}: {exc}"
    label, old, new = METRIC_LABELS[metric], score_on(holder, metric), score_on(candidate, metric)
    if new < old:
        return False, f"current @{alias} {h} has {label} {old:.3f} > candidate {c} {new:.3f}"
    return True, f"{label} {new:.3f} (was {h} {old:.3f})"


def _append(client: MlflowClient, version: ModelVersion, line: str) -> None:
    text = (version.description or "").rstrip("\n")
    client.update_model_version(
        version.name, str(version.version), description=f"{text}\n{line}".lstrip("\n")
    )


def promote(
    client: MlflowClient,
    name: str,
    version: int,
    alias: str = DEFAULT_ALIAS,
    force: bool = False,
    reason: str = "",
) -> PromotionResult:
    """Point `alias` at `version` unless it scores lower than the current holder (PromotionRefused; `force` overrides)."""
    validate_alias(alias)
    candidate = get_version(client, name, version)
    holder_number = get_model(client, name).aliases.get(alias)
    previous = None if holder_number is None else int(holder_number)
    if previous == int(candidate.version):
        return PromotionResult(name, alias, previous, previous, False, False, "", None,
                               f"{name} v{previous} already holds @{alias}; nothing changed")  # fmt: skip
    forced = False
    if previous is None:
        try:
            metric, value = version_score(candidate)
            comparison = f"first @{alias}: {METRIC_LABELS[metric]} {value:.3f}"
        except ValueError:
            comparison = f"first @{alias} (no holdout_auc or cv_auc tag)"
    else:
        holder = client.get_model_version(name, str(previous))
        allowed, comparison = _gate(holder, candidate, alias)
        if not allowed and not force:
            raise PromotionRefused(f"{comparison}; pass --force (force=True) to promote v{version} anyway")
        if not allowed:
            forced, comparison = True, f"forced over v{previous}: {comparison}"
    why = reason.strip() or comparison
    at = _now()
    client.set_registered_model_alias(name, alias, str(candidate.version))
    prefix = f"promoted_{alias}_"
    for key, value in {"at": at, "reason": why, "previous": "none" if previous is None else str(previous),
                       "forced": "true" if forced else "false"}.items():  # fmt: skip
        client.set_model_version_tag(name, str(candidate.version), prefix + key, value)
    was = "none" if previous is None else f"v{previous}"
    detail = f"{why} [{comparison}]" if reason.strip() else why
    _append(client, candidate, f"{at} promoted to @{alias} (previous: {was}): {detail}")
    if previous is not None:
        _append(
            client, client.get_model_version(name, str(previous)), f"{at} @{alias} moved to v{version}: {why}"
        )
    message = f"@{alias} -> {name} v{candidate.version} (previous: {was}): {detail}"
    return PromotionResult(name, alias, int(candidate.version), previous, True, forced, why, at, message)
