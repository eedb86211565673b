"""A local Ray on 127.0.0.1 only, with token authentication on and said so once in our words.

Ray reads both settings when `ray` is first imported: set later, the loopback one does nothing (every Ray
listener is then on all interfaces) and the auth one makes `ray.init` fail. So an entry point calls
`prepare_local_ray` before anything imports Ray.
"""

from __future__ import annotations

import ipaddress
import os
import sys

# "0": a single-node Ray whose node address, and so every listener, is 127.0.0.1 (it also disables multi-node).
LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray 2.60 already turns token auth on for a new local Ray, with a warning on every run; chosen here, it doesn't.
AUTH_VAR = "RAY_AUTH_MODE"


def prepare_local_ray(address: str | None) -> bool:
    """Set up this process's environment for a local Ray; returns whether it was set up.

    A user's own values win. Nothing is set when Ray joins a cluster (`address` or RAY_ADDRESS), whose nodes
    need their network address and whose auth is the cluster's, nor when `ray` was already imported (too late).
    """
    if address or os.environ.get("RAY_ADDRESS") or "ray" in sys.modules:
        return False
    os.environ.setdefault(LOOPBACK_VAR, "0")
    os.environ.setdefault(AUTH_VAR, "token")
    return True


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 and ::1, also written as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def describe_local_ray(node_address: str) -> str:
    """One line on who can reach a local Ray that has just started, in place of Ray's token-auth warning."""
    if is_loopback(node_address):
        where = "listening on 127.0.0.1 only"
    else:
        where = (
            f"listening on {node_address}, reachable from the network ({LOOPBACK_VAR} was not 0 when "
            "ray was imported)"
        )
    mode = os.environ.get(AUTH_VAR, "").lower()
    if mode == "token":
        auth = (
            "token authentication on: only processes holding the token (~/.ray/auth_token, or "
            "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) can use it"
        )
    else:
        auth = f"token authentication off ({AUTH_VAR}={mode or 'unset'})"
    return f"ray: local, {where}; {auth}"
