"""Where a study's results live: one resolver shared by the dashboards and every later step (register, predict).

Flags win; otherwise the study's `config.json` (what `search/run.py` recorded); otherwise the defaults of
`search.study`. Run from the folder `search/run.py` ran in, no flag is needed. Also here: how the dashboard
launchers run a local web server until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from search.study import StudyPaths, default_storage_url, default_tracking_uri, latest_study, read_json


class LocationError(ValueError):
    """No study (or not the one asked for) where the flags point."""


@dataclass(frozen=True)
class Locations:
    """A runs folder, the study in it (None when none is needed and none exists) and its two stores."""

    runs_dir: Path
    study: str | None
    study_dir: Path | None
    storage: str | None
    tracking_uri: str

    def require_study(self) -> str:
        """The study name, or a LocationError saying how to make or name one."""
        if self.study is None:
            raise LocationError(_no_study(self.runs_dir))
        return self.study


def _no_study(runs_dir: Path) -> str:
    return (
        f"no study in {runs_dir} (no {runs_dir}/<study>/config.json): run `python search/run.py` first, "
        "or point --runs-dir at the folder it wrote"
    )


def studies_in(runs_dir: Path) -> list[str]:
    """Names of the studies in a runs folder, oldest first."""
    configs = sorted(Path(runs_dir).glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return [p.parent.name for p in configs]


def resolve(
    runs_dir: Path = Path("runs"),
    study: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Locations:
    """Locations of `study` (default: the latest study in `runs_dir`); raises LocationError for a missing study."""
    runs_dir = Path(runs_dir)
    name = study or latest_study(runs_dir)
    config: dict = {}
    if name is not None:
        paths = StudyPaths(runs_dir / name)
        config = read_json(paths.config)
        if not config and storage is None:
            known = ", ".join(studies_in(runs_dir)) or "none"
            raise LocationError(f"no study named {name!r} in {runs_dir} (studies there: {known})")
    study_dir = runs_dir / name if name is not None else None
    storage = storage or config.get("storage")
    if storage is None and study_dir is not None:
        storage = default_storage_url(StudyPaths(study_dir))
    tracking_uri = tracking_uri or config.get("tracking_uri") or default_tracking_uri(runs_dir)
    return Locations(runs_dir, name, study_dir, storage, tracking_uri)


def add_location_flags(parser: argparse.ArgumentParser, study_required: bool) -> None:
    """Add --runs-dir, --study, --storage, --tracking-uri (all optional: defaults find what the search wrote)."""
    group = parser.add_argument_group("where the study is (if omitted: what search/run.py wrote)")
    group.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="the runs folder (default: %(default)s)"
    )
    scope = "" if study_required else "; only used to find its MLflow store"
    group.add_argument(
        "--study", default=None, help=f"study name; if omitted, the latest study in --runs-dir{scope}"
    )
    group.add_argument(
        "--storage", default=None, help="Optuna storage URL; if omitted, the study's (config.json)"
    )
    group.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI; if omitted, the study's, else sqlite <runs-dir>/mlflow.db")  # fmt: skip
    parser.set_defaults(_study_required=study_required)


def from_args(args: argparse.Namespace) -> Locations:
    """Resolve the flags added by `add_location_flags`; a missing study exits with code 2 and a clear message."""
    try:
        found = resolve(args.runs_dir, args.study, args.storage, args.tracking_uri)
        if getattr(args, "_study_required", True):
            found.require_study()
    except LocationError as exc:
        raise fail(str(exc)) from None
    return found


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (None for other databases or in-memory sqlite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def fail(message: str) -> SystemExit:
    """Print `error: message` to stderr and return the SystemExit(2) to raise."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return SystemExit(2)


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_url(host: str, port: int, path: str = "/") -> str:
    """`http://host:port/path` (IPv6 hosts bracketed)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


def _answers(url: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never ask a proxy about loopback
    try:
        with direct.open(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server started in its own session: SIGTERM, wait, then SIGKILL whatever is left of its group."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the server running
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:  # workers or helpers the server spawned and left behind
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(
    command: list[str],
    host: str,
    port: int,
    url: str,
    what: str,
    probe: str = "/",
    env: dict[str, str] | None = None,
    ready_timeout: float = 180.0,
) -> int:
    """Run a web server until Ctrl-C or SIGTERM (then stop it and return 0); print `url` once it answers."""
    if not port_free(host, port):
        raise fail(f"port {port} on {host} is in use: pick another with --port")
    print(f"starting {what} ...", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops the server like Ctrl-C
    previous_int = signal.getsignal(signal.SIGINT)
    probe_url = http_url(
        "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host, port, probe
    )
    proc: subprocess.Popen | None = None
    try:
        # Own session: Ctrl-C reaches only this launcher, which stops the server and all it spawned.
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while not _answers(probe_url):
            if proc.poll() is not None:
                print(f"error: {what} exited with code {proc.returncode} before serving", file=sys.stderr)
                return proc.returncode or 1
            if time.monotonic() > deadline:
                print(
                    f"error: {what} did not answer on {probe_url} within {ready_timeout:.0f} s",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.3)
        print(f"{what}: {url}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        code = proc.wait()
        print(f"{what} exited with code {code}", file=sys.stderr, flush=True)
        return code or 1
    except KeyboardInterrupt:
        print(f"stopping {what}", flush=True)
        return 0
    finally:
        if proc is not None:
            _stop(proc)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
