"""ImageNet weights fetched once, before a search: found in the local caches, else downloaded where timm and
torchvision download them from (the Hugging Face hub for timm, a torch hub URL for torchvision) into those
same caches, with a short timeout.

Why here and not in the trials: trials only ever read the caches (`trainers.backbones` finds files with
`try_to_load_from_cache` and loads them by path), so a file is downloaded once per machine, never once per
trial, and a search on a machine without internet costs one short failed connection, said once. The network
is skipped entirely with `HF_HUB_OFFLINE=1` (or when the caller does not ask for pretrained weights).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import timm
import torch

from trainers.backbones import get_spec, hf_hub_cache, torch_checkpoints

#: Seconds allowed for the first answer of a weights server (connecting included) before it counts as unreachable.
CONNECT_TIMEOUT = 5.0
#: File names timm tries for a hub id without its own file name, in timm's order (safetensors first).
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
RANDOM_INIT = "those trials start from random initialisation (recorded on each trial as pretrained=false)"


class Unreachable(OSError):
    """The weights server did not answer (no route, refused, name not resolved, timed out, offline mode)."""


@dataclass(frozen=True)
class Source:
    """Where one backbone's ImageNet weights are downloaded from: a hub repository or a plain URL."""

    backbone: str
    server: str  # the endpoint or scheme://host, to say once which server could not be reached
    repo_id: str | None = None
    revision: str | None = None
    filenames: tuple[str, ...] = ()
    url: str | None = None


@dataclass
class Resolution:
    """What the driver found for each backbone of the space: already cached, downloaded, or missing (and why)."""

    cached: list[str] = field(default_factory=list)
    downloaded: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    requests_skipped: bool = False  # offline: not one request was made

    def notes(self) -> list[str]:
        """One line naming every backbone that will start from random initialisation, grouped by reason."""
        if not self.missing:
            return []
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.missing.items():
            by_reason.setdefault(reason, []).append(name)
        parts = [f"{', '.join(names)} ({reason})" for reason, names in by_reason.items()]
        return [f"note: no ImageNet weights for {'; '.join(parts)}: {RANDOM_INIT}"]


def hub_offline() -> bool:
    """Whether Hugging Face's offline mode is on (the variable now, or as huggingface_hub read it at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"} or constants.is_offline_mode()


def hf_endpoint() -> str:
    """The hub to download from: `HF_ENDPOINT` as set now (a mirror, or a test server), else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def weight_source(name: str) -> Source | None:
    """Where `name`'s ImageNet weights come from, following timm's own preference (hub id, else its URL);
    None for a backbone without ImageNet weights."""
    spec = get_spec(name)
    if spec.locate_weights is None:
        return None
    if spec.weights_url is not None:
        url = spec.weights_url()
        return Source(name, _server(url), url=url)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILENAMES
        return Source(name, hf_endpoint(), repo_id=repo_id, revision=revision or None, filenames=names)
    return Source(name, _server(cfg.url), url=cfg.url) if cfg.url else None


def resolve_weights(
    names: Iterable[str], log: Callable[[str], None], timeout: float = CONNECT_TIMEOUT
) -> Resolution:
    """Make the ImageNet weights of `names` local before any trial starts: from the caches, else downloaded
    once (progress through `log`); a server that does not answer is tried once, not once per backbone."""
    out = Resolution(requests_skipped=hub_offline())
    unreachable: dict[str, str] = {}
    for name in dict.fromkeys(names):
        locate = get_spec(name).locate_weights
        source = weight_source(name)
        if locate is not None and locate()[0] is not None:
            out.cached.append(name)
        elif source is None:
            out.missing[name] = "none exist for this model"
        elif out.requests_skipped:
            out.missing[name] = "not in the local caches, and HF_HUB_OFFLINE is set: nothing downloaded"
        elif source.server in unreachable:
            out.missing[name] = unreachable[source.server]
        else:
            try:
                path = _download(source, log, timeout)
                if (
                    locate is None or locate()[0] is None
                ):  # trials would not find it: say so now, not per trial
                    raise FileNotFoundError(f"{path} is not where the trials look for it")
                out.downloaded[name] = path
            except Unreachable as exc:
                unreachable[source.server] = out.missing[name] = (
                    f"not downloaded: {source.server} is unreachable from here ({exc}; timeout {timeout:g} s)"
                )
            except Exception as exc:  # a missing file, a bad hash, a full disk: this backbone only
                out.missing[name] = f"download failed: {type(exc).__name__}: {_first_line(exc)}"
    return out


def _download(source: Source, log: Callable[[str], None], timeout: float) -> Path:
    """Fetch `source` into its cache (the hub cache or torch hub's checkpoints), saying what and how big."""
    if source.repo_id is not None:
        return _download_hf(source, log, timeout)
    return _download_url(source, log, timeout)


def _download_hf(source: Source, log: Callable[[str], None], timeout: float) -> Path:
    """Ask the hub for the first of timm's file names it holds, then download it with huggingface_hub."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import OfflineModeIsEnabled, RemoteEntryNotFoundError
    from huggingface_hub.utils import disable_progress_bars

    endpoint, repo, revision = source.server, str(source.repo_id), source.revision
    for filename in source.filenames:
        url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
        try:
            size = get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint).size
        except RemoteEntryNotFoundError:
            continue
        except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled) as exc:
            raise Unreachable(f"{type(exc).__name__}: {_first_line(exc)}") from None
        log(
            f"weights: downloading {source.backbone}'s ImageNet weights, {repo} {filename} ({_size(size)}), "
            f"from {endpoint}"
        )
        start = time.monotonic()
        with disable_progress_bars():  # our own line instead of the hub's bar
            path = hf_hub_download(
                repo,
                filename,
                revision=revision,
                cache_dir=hf_hub_cache(),
                endpoint=endpoint,
                etag_timeout=timeout,
            )
        log(
            f"weights: {source.backbone}: {_size(os.path.getsize(path))} in {time.monotonic() - start:.1f} s, "
            "into the Hugging Face cache"
        )
        return Path(path)
    raise FileNotFoundError(f"{repo} holds none of {', '.join(source.filenames)}")


def _download_url(source: Source, log: Callable[[str], None], timeout: float) -> Path:
    """A torch hub URL into torch hub's checkpoints folder (hash-checked as torch hub does), after a HEAD
    request with `timeout` that tells an unreachable server from a slow download."""
    url = str(source.url)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as answer:
            size = answer.headers.get("Content-Length")
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"{type(exc).__name__}: {_first_line(exc)}") from None
    dest = torch_checkpoints() / os.path.basename(urlsplit(url).path)
    log(
        f"weights: downloading {source.backbone}'s ImageNet weights, {dest.name} "
        f"({_size(int(size) if size else None)}), from {source.server}"
    )
    match = torch.hub.HASH_REGEX.search(dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    torch.hub.download_url_to_file(url, str(dest), match.group(1) if match else None, progress=False)
    log(
        f"weights: {source.backbone}: {_size(dest.stat().st_size)} in {time.monotonic() - start:.1f} s, "
        "into torch hub's checkpoints"
    )
    return dest


def _server(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _size(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e6:.1f} MB"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
