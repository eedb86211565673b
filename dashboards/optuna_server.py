"""optuna-dashboard on the Optuna storage URL in `STAGESEARCH_STORAGE`, served until stopped (started by
`stagesearch dashboard`).

optuna-dashboard's own command line takes the storage URL as an argument, where its password would be
readable by every user of the machine (`ps`); this server reads it from its environment instead. It serves
optuna-dashboard's WSGI app with the threaded wsgiref server that `optuna-dashboard --server wsgiref` uses:
`optuna_dashboard.run_server()` serves one request at a time, and gunicorn forks workers after opening the
database.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable without installing it
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
from socketserver import ThreadingMixIn  # noqa: E402
from wsgiref.simple_server import WSGIServer, make_server  # noqa: E402

from search.study import STORAGE_ENV, StorageError, open_storage  # noqa: E402


class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    """A wsgiref server that answers requests in threads (the dashboard polls while a page loads)."""

    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    """Serve optuna-dashboard on $STAGESEARCH_STORAGE at --host:--port until stopped; 2 without a storage."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    url = os.environ.get(STORAGE_ENV)
    if not url:
        print(f"error: no Optuna storage URL in {STORAGE_ENV}", file=sys.stderr)
        return 2
    try:
        # optuna-dashboard's own options for an RDB storage: read what is there, create nothing.
        storage = open_storage(url, skip_compatibility_check=True, skip_table_creation=True)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import optuna_dashboard

    server = make_server(
        args.host, args.port, optuna_dashboard.wsgi(storage), server_class=ThreadedWSGIServer
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
