"""A weights server on 127.0.0.1 for tests: answers like the Hugging Face hub's `resolve` URLs (the headers
huggingface_hub needs: ETag, X-Repo-Commit, Content-Length; `X-Error-Code: EntryNotFound` for a missing file)
and like a plain file server for torch hub URLs, and counts every request it gets. Plus a guard that makes this
process refuse (and record) any name lookup or connection beyond 127.0.0.1, and the hub client settings for a
test (huggingface_hub reads some once, at import)."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch
from safetensors.torch import save

COMMIT = "1" * 40


@dataclass
class Served:
    """The server's address, what it serves (URL path -> bytes) and the requests it got ("HEAD /path")."""

    url: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)

    def add_hub_file(self, repo_id: str, filename: str, state: dict[str, torch.Tensor]) -> bytes:
        """Serve `state` as `repo_id`'s `filename` where hf_hub_download asks for it (safetensors, or a
        torch.save file for a .bin name)."""
        tensors = {k: v.contiguous() for k, v in state.items()}
        if filename.endswith(".safetensors"):
            data = save(tensors)
        else:
            buffer = io.BytesIO()
            torch.save(tensors, buffer)
            data = buffer.getvalue()
        self.files[f"/{repo_id}/resolve/main/{filename}"] = data
        return data


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            served.requests.append(f"{self.command} {self.path}")
            data = served.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(body=True)

        def log_message(self, format: str, *args: object) -> None:  # quiet; the requests are counted instead
            pass

    return Handler


@contextmanager
def weights_server() -> Iterator[Served]:
    """Serve files on a free port of 127.0.0.1 until the block ends, then stop the server and its thread."""
    served = Served(url="", files={})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


LOOPBACK = {"127.0.0.1", "localhost"}


@contextmanager
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """In this process, refuse every name lookup and connection that is not for 127.0.0.1, listing each one
    tried; the block fails if the list is not empty at its end (a test never reaches the internet)."""
    tried: list[str] = []
    lookup, connect = socket.getaddrinfo, socket.socket.connect

    def guarded_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK:
            tried.append(f"lookup {host}")
            raise OSError(f"test guard: no lookup of {host} (127.0.0.1 only)")
        return lookup(host, *args, **kwargs)

    def guarded_connect(sock: socket.socket, address: Any) -> Any:
        stream = (
            sock.type == socket.SOCK_STREAM
        )  # (a UDP "connect", as Ray does to learn its IP, sends nothing)
        if stream and sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            tried.append(f"connect {address}")
            raise OSError(f"test guard: no connection to {address} (127.0.0.1 only)")
        return connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    yield tried
    assert tried == [], f"the test tried to reach beyond 127.0.0.1: {tried}"


def point_hub_client_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """`url` as the hub (HF_ENDPOINT, read by our code when it downloads), online. huggingface_hub reads
    HF_HUB_OFFLINE and its telemetry switch once, at import: set those for this test too. Telemetry off: with
    it on, the first request also fetches a registry from the endpoint of import time (huggingface.co here)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
