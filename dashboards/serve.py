"""How the dashboard launchers run a local web server: print its URL once it answers, stop it on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from search.study import exit_error


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
    also: list[str] | None = None,
) -> int:
    """Run a web server until Ctrl-C or SIGTERM (then stop it and return 0); print `url` once it answers, then
    the lines `also` (other pages, what the values mean)."""
    if not port_free(host, port):
        raise exit_error(f"port {port} on {host} is in use: pick another with --port")
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
        for line in also or []:
            print(line, flush=True)
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
