"""Pseudonymised studies (`stagesearch run --pseudonymise`): patient ids become stable salted hashes.

A team that shares a tracking server should not find patient ids in it. A pseudonymised study maps every
patient id to `p-` + the first 12 hex digits of HMAC-SHA256(salt, id) once, when its inputs are prepared, so
the folds, the trials (Ray), their out-of-fold tables, MLflow and the report only ever see pseudonyms. The salt
is random, drawn when the study is created, and kept in the study folder only (`pseudonym_salt`, readable by its
owner only); `config.json` records that the study is pseudonymised and a check value of the salt (an HMAC of a
fixed text, which does not reveal the salt), so a resumed study refuses a missing or replaced salt instead of
making pseudonyms that no longer match its folds.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from search.study.config import StudyConfig
from search.study.folder import StudyFormatError, StudyPaths
from trainers.atomic import atomic_path

SETTING = "pseudonymise"  # the study setting (config.json `settings`)
CHECK_KEY = "pseudonym_salt_check"  # config.json (StudyConfig.pseudonym_salt_check): never the salt
PREFIX = "p-"
DIGITS = 12  # hex digits of the HMAC kept: 48 bits, collisions are checked for anyway
_CHECK_TEXT = "stagesearch pseudonym salt check"


class SaltError(StudyFormatError):
    """A pseudonymised study whose salt is missing or not the one it was created with."""


def is_pseudonymised(config: StudyConfig) -> bool:
    """Whether the study of `config` (its config.json) replaces patient ids by pseudonyms."""
    return bool(config.settings.pseudonymise)


def new_salt() -> str:
    """A fresh random salt (128 bits, hex)."""
    return secrets.token_hex(16)


def _hmac(salt: str, text: str) -> str:
    return hmac.new(salt.encode(), text.encode(), hashlib.sha256).hexdigest()


def salt_check(salt: str) -> str:
    """A value recorded in config.json to recognise the salt later; it does not reveal the salt."""
    return _hmac(salt, _CHECK_TEXT)[:16]


def pseudonym(salt: str, patient_id: str) -> str:
    """The stable pseudonym of one patient id under `salt`."""
    return PREFIX + _hmac(salt, patient_id)[:DIGITS]


def pseudonyms(salt: str, patient_ids: Iterable[str]) -> dict[str, str]:
    """Patient id -> pseudonym for every id; SaltError if two ids would share a pseudonym (odds of about
    1 in 5 million for 10,000 patients)."""
    mapping = {p: pseudonym(salt, p) for p in patient_ids}
    if len(set(mapping.values())) != len(mapping):
        raise SaltError("two patient ids share a pseudonym under this study's salt; start a new --study")
    return mapping


def write_salt(paths: StudyPaths, salt: str) -> None:
    """Store the salt in the study folder, readable and writable by its owner only (mode 0600)."""
    with atomic_path(paths.salt) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # also when a stale tmp file had other permissions
            os.write(fd, (salt + "\n").encode())
        finally:
            os.close(fd)


def read_salt(paths: StudyPaths, config: StudyConfig) -> str:
    """The study's salt, checked against config.json; SaltError saying what to do if missing or replaced."""
    where: Path = paths.salt
    if not where.exists():
        raise SaltError(
            f"study {paths.name!r} is pseudonymised but its salt {where} is missing, so its pseudonyms "
            "cannot be made again; restore the file or start a new --study"
        )
    salt = where.read_text().strip()
    if config.pseudonym_salt_check and salt_check(salt) != config.pseudonym_salt_check:
        raise SaltError(
            f"study {paths.name!r}: {where} is not the salt the study was created with (its pseudonyms would "
            "not match); restore the file or start a new --study"
        )
    return salt


def study_pseudonyms(
    config: StudyConfig, paths: StudyPaths, patient_ids: Iterable[str]
) -> dict[str, str] | None:
    """Patient id -> pseudonym for a pseudonymised study (None for a study that keeps the ids)."""
    if not is_pseudonymised(config):
        return None
    return pseudonyms(read_salt(paths, config), patient_ids)
