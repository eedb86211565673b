"""A local search keeps every Ray listener on loopback and says, once and in our words, that token auth is on."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from search.tune.local_ray import AUTH_VAR, LOOPBACK_VAR, describe_local_ray, prepare_local_ray
from tests.search.conftest import ROOT, search_args


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _listening(root: psutil.Process) -> dict[tuple[str, int], str]:
    """(address, port) -> 'name pid' for each listening inet socket of `root` and all its descendants."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    found = {}
    for proc in procs:
        try:
            name, conns = proc.name(), proc.net_connections(kind="inet")
        except psutil.Error:  # gone meanwhile
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                found[(conn.laddr.ip, conn.laddr.port)] = f"{name} {proc.pid}"
    return found


@pytest.fixture(scope="module")
def local_search(tiny_cohort, tmp_path_factory) -> tuple[int, str, dict[tuple[str, int], str], int]:
    """Run a 2-trial search as a user would, sampling the sockets of its process tree until it ends."""
    tmp = tmp_path_factory.mktemp("loopback")
    cmd = [
        sys.executable,
        str(ROOT / "search" / "run.py"),
        *search_args(
            tiny_cohort,
            tmp / "runs",
            "lo",
            "--budget",
            "2",
            "--scheduler",
            "fifo",
            "--max-epochs",
            "1",
            "--num-cpus",
            "2",
            "--cpus-per-trial",
            "1",
            "--no-register",
        ),
    ]
    # A user's shell: none of the Ray settings the tests' own in-process Ray sessions get from conftest.
    env = {k: v for k, v in os.environ.items() if k not in (LOOPBACK_VAR, AUTH_VAR, "RAY_ADDRESS")}
    log_path = tmp / "search.log"
    seen: dict[tuple[str, int], str] = {}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            root = psutil.Process(proc.pid)
            deadline = time.monotonic() + 600
            while proc.poll() is None and time.monotonic() < deadline:
                seen.update(_listening(root))
                time.sleep(0.2)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the search is left: its own process group
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
    return proc.returncode, log_path.read_text(), seen, proc.pid


def test_every_ray_listener_is_on_loopback(local_search) -> None:
    rc, log, seen, driver = local_search
    assert rc == 0, log
    names = {who.split()[0] for who in seen.values()}
    assert {"gcs_server", "raylet"} <= names, f"the Ray processes were never seen listening: {seen}"
    assert any(who.endswith(f" {driver}") for who in seen.values()), f"the driver was never seen: {seen}"
    exposed = {f"{ip}:{port}": who for (ip, port), who in seen.items() if not _loopback(ip)}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_token_auth_said_once_in_our_words(local_search) -> None:
    rc, log, _, _ = local_search
    assert rc == 0, log
    assert "Token authentication is enabled" not in log and f"{AUTH_VAR}=disabled" not in log, log
    ours = [line for line in log.splitlines() if line.startswith("ray: local")]
    assert len(ours) == 1 and "127.0.0.1 only" in ours[0] and "token authentication on" in ours[0], log


def test_prepare_local_ray_only_for_a_local_ray_not_yet_imported(monkeypatch) -> None:
    for name in (LOOPBACK_VAR, AUTH_VAR, "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "ray", sys.modules.get("ray", object()))
    assert not prepare_local_ray(None)  # too late: Ray has read its environment
    monkeypatch.delitem(sys.modules, "ray")
    assert not prepare_local_ray("auto") and not prepare_local_ray("ray://head:10001")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert not prepare_local_ray(None)
    assert LOOPBACK_VAR not in os.environ and AUTH_VAR not in os.environ  # a cluster keeps Ray's defaults
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv(AUTH_VAR, "disabled")  # the user's choice wins
    assert prepare_local_ray(None)
    assert os.environ[LOOPBACK_VAR] == "0" and os.environ[AUTH_VAR] == "disabled"


def test_describe_local_ray_tells_when_exposed(monkeypatch) -> None:
    monkeypatch.setenv(AUTH_VAR, "token")
    assert "127.0.0.1 only" in describe_local_ray("127.0.0.1")
    assert "127.0.0.1 only" in describe_local_ray("::ffff:127.0.0.1")
    exposed = describe_local_ray("192.0.2.7")
    assert "reachable from the network" in exposed and LOOPBACK_VAR in exposed
    monkeypatch.setenv(AUTH_VAR, "disabled")
    assert "token authentication off" in describe_local_ray("127.0.0.1")
