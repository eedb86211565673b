"""The MLflow Model Registry of staging models: score, list and rank versions, and move aliases behind a gate.

Scores come from the version tags the registration writes (see `search.registry.gate`): each version is scored on
one kind of estimate (`estimate`: holdout, corrected_cv or cv) and made on one cohort (`cohort_hash`). The gate
compares a candidate with the current alias holder only when both match (like with like), refuses a lower
score (unless the candidate was shown to beat chance and the holder was not), and refuses a version tagged
`beats_chance=false`; `--force` overrides each refusal, on the record.

`best_version` ranks only the versions comparable with the current holder (same cohort, same kind of
estimate), so `--best` never replaces a champion with a version from another cohort; with no holder yet, the
versions of the newest version's cohort, on the most honest kind of estimate they have. Versions not shown to
beat chance are ranked only when no other is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.registry import DEFAULT_MODEL_NAME
from search.registry.gate import (
    CHALLENGER,
    CORRECTED,
    CV,
    ESTIMATES,
    HOLDOUT,
    METRIC_LABELS,
    VersionLike,
    beats_chance,
    chance_problem,
    compare,
    estimate_kind,
    pool_for,
    reference_for,
    tag_float,
    version_score,
)

__all__ = [
    "CHALLENGER",
    "CORRECTED",
    "CV",
    "ESTIMATES",
    "HOLDOUT",
    "METRIC_LABELS",
    "VersionLike",
    "estimate_kind",
    "tag_float",
    "version_score",
]

DEFAULT_ALIAS = "champion"
ALIAS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class RegistryError(Exception):
    """A problem the user can fix: no such model or version, nothing registered or scored, a bad alias."""


class PromotionRefused(RegistryError):
    """The gate kept the current alias holder: the candidate scores lower, cannot be compared, or is at chance."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version  # the refused candidate (what `--force` would promote)


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
        rows.append(
            {
                "version": int(v.version),
                "run_id": v.run_id,
                "aliases": aliases.get(int(v.version), []),
                "tags": dict(v.tags or {}),
                "created": _iso(v.creation_timestamp),
                "description": v.description or "",
                "source": v.source,
                "score": score,
            }
        )
    return rows


@dataclass(frozen=True)
class BestChoice:
    """What `--best` picks: the best version among those comparable with the reference (the current holder, else
    the newest version's cohort), and the versions it left out because they are not comparable."""

    version: ModelVersion
    metric: str
    cohort: str
    holder: int | None
    left_out: list[int]


def best_choice(client: MlflowClient, name: str, alias: str = DEFAULT_ALIAS) -> BestChoice:
    """The highest-scoring comparable version (ties: higher cv_auc, then the holder, then the newer); versions tagged
    beats_chance=false only when no other comparable version is left."""
    model, versions = _versions_or_fail(client, name)
    number = model.aliases.get(alias)
    holder = (
        next((v for v in versions if int(v.version) == int(number)), None) if number is not None else None
    )
    reference = reference_for(versions, holder)
    pool = pool_for(versions, reference)
    if not pool and holder is not None:
        raise RegistryError(
            f"current @{alias} v{holder.version} has no holdout_auc, corrected_auc or cv_auc tag, so "
            "--best has nothing to compare with; promote a version with --version N --force"
        )
    if not pool:
        raise RegistryError(
            f"no version of {name!r} has a holdout_auc, corrected_auc or cv_auc tag to rank it by"
        )
    ranked = [v for v in pool if beats_chance(v) != "false"] or pool
    metric = version_score(pool[0])[0]
    # ties go to the current holder (a promotion that changes nothing is not worth a hint), then the newer one
    pick = max(
        ranked, key=lambda v: (version_score(v)[1], tag_float(v, CV) or 0.0, v is holder, int(v.version))
    )
    chosen = {int(v.version) for v in pool}
    return BestChoice(
        pick,
        metric,
        (reference.tags or {}).get("cohort_hash", "unknown"),
        None if holder is None else int(holder.version),
        [int(v.version) for v in versions if int(v.version) not in chosen],
    )


def best_version(client: MlflowClient, name: str, alias: str = DEFAULT_ALIAS) -> ModelVersion:
    """The version `promote --best` picks (see `best_choice`)."""
    return best_choice(client, name, alias).version


def resolve_uri(client: MlflowClient, uri: str, where: str = "") -> ModelVersion:
    """The registered version `models:/NAME@ALIAS`, `models:/NAME/VERSION` or `models:/NAME/latest` names (with its
    aliases); RegistryError saying what to run when it names nothing: nothing registered, no version promoted to
    the alias yet (the promote command that would, as `--list` gives it), no such version."""
    body = uri.removeprefix("models:/")
    name, alias = body.rsplit("@", 1) if "@" in body else (body.rpartition("/")[0], None)
    ref = None if alias is not None else body.rpartition("/")[2]
    try:
        model = get_model(client, name)
    except RegistryError as exc:
        raise RegistryError(f"{exc}: register a study's winner with {command('register', where)}") from None
    if alias is not None:
        if alias not in model.aliases:
            raise RegistryError(_no_alias(client, name, alias, where))
        return client.get_model_version_by_alias(name, alias)
    if ref == "latest":
        return client.get_model_version(name, _all_versions(client, name)[-1].version)
    if not (ref or "").isdigit():
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return get_version(client, name, int(ref))


def _no_alias(client: MlflowClient, name: str, alias: str, where: str) -> str:
    """Why `models:/NAME@ALIAS` loads nothing, and the command that would make it load a version."""
    try:
        step = next_step(client, name, alias, where)
    except RegistryError as exc:
        step = str(exc)
    newest = _all_versions(client, name)[-1].version if _all_versions(client, name) else None
    direct = f"; or predict with one version: --model models:/{name}/{newest}" if newest else ""
    return f"no version of {name!r} holds @{alias} yet (none has been promoted to it); {step}{direct}"


def validate_alias(alias: str) -> None:
    """RegistryError unless MLflow accepts `alias` (letters, digits, _ and -; not `latest` nor `v<N>`)."""
    if not ALIAS_NAME.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryError(
            f"invalid alias {alias!r}: use letters, digits, _ and - (not 'latest' nor a version like 'v3')"
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def judge(
    client: MlflowClient, name: str, candidate: ModelVersion, previous: int | None, alias: str
) -> tuple[bool, str]:
    """(may `candidate` take `alias` from version `previous`, the comparison or every reason it may not)."""
    problems = [p for p in [chance_problem(candidate, alias)] if p]
    if previous is None:
        try:
            metric, value = version_score(candidate)
            text = f"first @{alias}: {METRIC_LABELS[metric]} {value:.3f}"
        except ValueError:
            text = f"first @{alias} (no holdout_auc, corrected_auc or cv_auc tag)"
    else:
        allowed, text = compare(client.get_model_version(name, str(previous)), candidate, alias)
        problems += [] if allowed else [text]
    return (False, "; ".join(problems)) if problems else (True, text)


def command(
    sub: str, where: str, *flags: str, name: str = DEFAULT_MODEL_NAME, alias: str = DEFAULT_ALIAS
) -> str:
    """A command a hint tells the user to run, in backticks (the tests run every command a hint names):
    `stagesearch promote --runs-dir R --best`, with --model-name/--alias when they are not the defaults."""
    extra = (
        []
        if sub != "promote"
        else ([f"--model-name {name}"] if name != DEFAULT_MODEL_NAME else [])
        + ([f"--alias {alias}"] if alias != DEFAULT_ALIAS else [])
    )
    return "`" + " ".join(["stagesearch", sub, *([where] if where else []), *flags, *extra]) + "`"


def next_step(client: MlflowClient, name: str, alias: str = DEFAULT_ALIAS, where: str = "") -> str:
    """What `promote --best` would do now, in words, with the exact command to run (the same checks as
    `promote`, nothing written). `where`: the location flags the commands carry (see `where_flags`)."""
    choice = best_choice(client, name, alias)
    pick, was = choice.version, choice.holder
    head = f"best on {METRIC_LABELS[choice.metric]} among cohort {choice.cohort}: v{pick.version}"
    force = command("promote", where, "--version N --force", name=name, alias=alias)
    others = (
        f"; left out (another cohort or kind of estimate, not comparable): "
        f"{', '.join(f'v{n}' for n in choice.left_out)} (promote one with {force})"
        if choice.left_out
        else ""
    )
    if was == int(pick.version):
        return f"{head}, already @{alias}{others}"
    allowed, text = judge(client, name, pick, was, alias)
    if allowed:
        return (
            f"{head}: promote it with {command('promote', where, '--best', name=name, alias=alias)}{others}"
        )
    anyway = command("promote", where, f"--version {pick.version} --force", name=name, alias=alias)
    return f"{head}; --best would refuse it: {text}; to promote it anyway: {anyway}{others}"


def _append(client: MlflowClient, version: ModelVersion, line: str) -> None:
    text = (version.description or "").rstrip("\n")
    client.update_model_version(
        version.name,
        str(version.version),
        description=f"{text}\n\n{line}".lstrip("\n"),  # a paragraph in markdown
    )


def promote(
    client: MlflowClient,
    name: str,
    version: int,
    alias: str = DEFAULT_ALIAS,
    force: bool = False,
    reason: str = "",
) -> PromotionResult:
    """Point `alias` at `version` unless the gate refuses (another cohort or kind of estimate, a lower score, not
    shown to beat chance: PromotionRefused; `force` overrides, recorded as forced)."""
    validate_alias(alias)
    candidate = get_version(client, name, version)
    holder_number = get_model(client, name).aliases.get(alias)
    previous = None if holder_number is None else int(holder_number)
    if previous == int(candidate.version):
        return PromotionResult(
            name,
            alias,
            previous,
            previous,
            False,
            False,
            "",
            None,
            f"{name} v{previous} already holds @{alias}; nothing changed",
        )
    allowed, comparison = judge(client, name, candidate, previous, alias)
    if not allowed and not force:
        raise PromotionRefused(f"{comparison}; pass --force to promote v{version} anyway", int(version))
    forced = not allowed
    if forced:
        comparison = (
            f"forced over v{previous}: {comparison}" if previous is not None else f"forced: {comparison}"
        )
    why = reason.strip() or comparison
    at = _now()
    client.set_registered_model_alias(name, alias, str(candidate.version))
    prefix = f"promoted_{alias}_"
    for key, value in {
        "at": at,
        "reason": why,
        "previous": "none" if previous is None else str(previous),
        "forced": "true" if forced else "false",
    }.items():
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
