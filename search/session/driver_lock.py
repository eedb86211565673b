"""One driver per study: `stagesearch run` and `stagesearch register` hold the study's lock while they write it.

Two locks, both released by the operating system or the database when their holder dies, so that the lock of a
killed driver is never stale and the next driver takes it over without anyone deleting a file:

- **The folder's**: an exclusive `flock` on `runs/<study>/driver.lock` (`filelock`), with `driver.json` beside
  it naming the holder (process id, host, command, since when) for the message of a refused second driver. On a
  cluster's shared runs folder (NFS) Linux carries `flock` to the server as a byte-range lock, so drivers on two
  nodes exclude each other too, as long as the share is mounted with locking (not `nolock`).
- **The database's**, for a study in PostgreSQL (two people with runs folders of their own can point at one
  shared study): a session-level advisory lock keyed by the study name, on a connection of its own kept open
  while the lock is held; its `application_name` names the holder. A server restart drops the connection and
  with it the lock; the driver goes on (it does not take the lock again).

Readers (report, dashboards, predict) never take either lock: they are never blocked.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from search.study.folder import StudyPaths, read_json, sqlite_path, write_json
from search.study.locations import open_storage, public

LOCK_FILE = "driver.lock"
OWNER_FILE = "driver.json"
#: first key of the advisory lock (the second is the study's): "stag" in ASCII, so other applications'
#: advisory locks on the same database do not collide with ours
ADVISORY_CLASS = 0x73746167


class StudyBusyError(Exception):
    """Another live process is the study's driver; the message names it and what to do."""


def owner_record(command: str) -> dict[str, Any]:
    """Who holds the lock: written to `driver.json` and shown to a refused second driver."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": _user(),
        "command": command,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container)
        return str(os.getuid())


def describe_owner(owner: dict[str, Any]) -> str:
    """'process 1234 on host h (user u, stagesearch run, since ...)'."""
    if not owner:
        return "another process (it has not written who it is yet)"
    return (
        f"process {owner.get('pid', '?')} on {owner.get('host', '?')} "
        f"(user {owner.get('user', '?')}, stagesearch {owner.get('command', '?')}, since {owner.get('since', '?')})"
    )


def advisory_key(study: str) -> int:
    """The second key of the study's advisory lock: 31 bits of a hash of its name (a PostgreSQL int4)."""
    return int.from_bytes(hashlib.sha256(study.encode()).digest()[:4], "big") >> 1


@dataclass
class DriverLock:
    """The locks one process holds on one study; `depth` counts nested holders in this process (the search
    registers its winner while it holds the lock)."""

    paths: StudyPaths
    file_lock: Any
    connection: Any = None  # the PostgreSQL connection holding the advisory lock, if any
    depth: int = 1
    owner: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """Let go of one hold; the last one drops both locks (and `driver.json`)."""
        self.depth -= 1
        if self.depth > 0:
            return
        _HELD.pop(_key(self.paths), None)
        if self.connection is not None:
            _close(self.connection)
        owner_file = self.paths.root / OWNER_FILE
        if read_json(owner_file).get("pid") == os.getpid():
            owner_file.unlink(missing_ok=True)
        self.file_lock.release()

    def __enter__(self) -> DriverLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[str, DriverLock] = {}


def _key(paths: StudyPaths) -> str:
    return str(paths.root.resolve())


def hold(paths: StudyPaths, storage_url: str | None, command: str) -> DriverLock:
    """Take the study's locks for `command` ("run", "register"), or raise StudyBusyError naming the live
    holder. Held again by the same process, it only counts the hold. Use as a context manager, or call
    `release()` once per `hold()`."""
    from filelock import FileLock, Timeout

    held = _HELD.get(_key(paths))
    if held is not None:
        held.depth += 1
        return held
    paths.root.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(paths.root / LOCK_FILE, timeout=0)
    try:
        file_lock.acquire()
    except Timeout:
        owner = read_json(paths.root / OWNER_FILE)
        raise StudyBusyError(
            _busy(paths.name, describe_owner(owner), owner.get("pid"), same_host(owner))
        ) from None
    owner = owner_record(command)
    try:
        connection = _advisory_lock(paths.name, storage_url, owner) if storage_url else None
    except BaseException:
        file_lock.release()
        raise
    write_json(paths.root / OWNER_FILE, owner)
    lock = DriverLock(paths, file_lock, connection, owner=owner)
    _HELD[_key(paths)] = lock
    return lock


def same_host(owner: dict[str, Any]) -> bool:
    return owner.get("host") == socket.gethostname()


def _busy(study: str, who: str, pid: Any, local: bool) -> str:
    stop = f"stop it (kill {pid})" if local and pid else "stop it"
    return (
        f"study {study!r} is being run by {who}: one driver per study. Wait for it to finish (follow it with "
        f"`stagesearch report --study {study}` or the dashboards), or {stop} and continue it with "
        f"`stagesearch run --study {study} --resume`"
    )


def _advisory_lock(study: str, storage_url: str, owner: dict[str, Any]) -> Any:
    """For a PostgreSQL storage, the open connection holding the study's advisory lock (None for sqlite and
    other databases: the folder's lock covers a study stored in its own folder)."""
    if sqlite_path(storage_url) is not None or not public(storage_url).startswith("postgresql"):
        return None
    import sqlalchemy

    engine = open_storage(storage_url).engine
    connection = engine.connect()
    name = f"stagesearch {owner['command']} pid {owner['pid']} on {owner['host']}"[:63]
    key = advisory_key(study)
    try:
        connection.execute(sqlalchemy.text("SELECT set_config('application_name', :n, false)"), {"n": name})
        got = connection.execute(
            sqlalchemy.text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": ADVISORY_CLASS, "k": key}
        ).scalar()
        connection.commit()  # the lock is the session's, not the transaction's: it outlives this commit
        if got:
            return connection
        holder = connection.execute(
            sqlalchemy.text(
                "SELECT a.application_name, host(a.client_addr) FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.classid = :c AND l.objid = :k AND l.objsubid = 2 AND l.granted"
            ),
            {"c": ADVISORY_CLASS, "k": key},
        ).first()
    except BaseException:
        _close(connection)
        raise
    _close(connection)
    who = (
        f"{holder[0] or 'a client'} (from {holder[1] or 'the database host'})" if holder else "another client"
    )
    raise StudyBusyError(
        _busy(study, f"{who} through the shared database {public(storage_url)}", None, False)
    )


def _close(connection: Any) -> None:
    """End the connection's database session (not back to a pool, where it would keep its advisory lock)."""
    try:
        connection.invalidate()  # closes the DB-API connection: PostgreSQL drops the session's advisory locks
        connection.close()
        connection.engine.dispose()
    except Exception:  # noqa: BLE001 - the server may be gone already, and with it the lock
        pass


def release_all() -> None:
    """Drop every lock this process still holds (a command's last step; the OS would at exit anyway)."""
    for lock in list(_HELD.values()):
        lock.depth = 1
        lock.release()
