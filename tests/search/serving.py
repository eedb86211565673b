"""A registered model served by `mlflow models serve --env-manager local` on 127.0.0.1, stopped by process id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from search.study import default_tracking_uri
from tests.search.conftest import DIRECT, free_port


@contextmanager
def served_model(runs: Path, model_uri: str, tmp_path: Path) -> Iterator[str]:
    """The server's URL while `model_uri` (of the runs folder's default tracking store) is served."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": default_tracking_uri(runs),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # its uvicorn
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*cmd, "-h", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while not answers(f"{url}/ping"):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the model server did not start: " + log_path.read_text()[-3000:]
            time.sleep(1)
        yield url
    finally:
        os.killpg(
            proc.pid, signal.SIGTERM
        )  # the server and its uvicorn worker, by the id of the process we started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def answers(url: str) -> bool:
    try:
        with DIRECT.open(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def post(url: str, records: list[dict]) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a `dataframe_records` request."""
    data = json.dumps({"dataframe_records": records}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with DIRECT.open(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
