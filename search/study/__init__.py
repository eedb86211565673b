"""The one owner of a study: its folder `runs/<study>/`, its stores, and what its trials say.

`folder`: paths, the folder's format version, resolving `--runs-dir/--study/--storage/--tracking-uri`.
`credentials`: store URLs shown and written with `***` for their password, which is put back only to connect.
`queries`: trial counts, the best trial, closing stale trials, the leaderboard and `leaderboard.json`.
Both import optuna only (no Ray, no torch), so the dashboards read a study through this package.
`search.study.inputs` turns a study's stored config into prepared training inputs for the search and the refit;
it needs the trainers, so it is not imported here.
"""

from __future__ import annotations

from search.study.credentials import (
    HIDDEN,
    STORAGE_ENV,
    TRACKING_ENV,
    RDBStore,
    StorageError,
    open_storage,
    public,
    public_argv,
    reveal,
    warn_if_on_command_line,
)
from search.study.folder import (
    BATCH_SIZE_ATTR,
    CONFIG_ATTR,
    ERROR_ATTR,
    FAIL_REASON_ATTR,
    FAMILY_ATTR,
    FORMAT_VERSION,
    INTERRUPTED_ATTR,
    LEADERBOARD_SCHEMA,
    MLFLOW_RUN_ATTR,
    OOF_COLUMNS,
    OPTUNA_NUMBER_KEY,
    LocationError,
    Locations,
    StudyFormatError,
    StudyPaths,
    add_location_flags,
    check_format,
    default_storage_url,
    default_tracking_uri,
    exit_error,
    folder_format,
    from_args,
    latest_study,
    read_failure,
    read_json,
    read_oof,
    resolve,
    sqlite_path,
    studies_in,
    write_json,
    write_oof,
)
from search.study.queries import (
    ESTIMATE_KEYS,
    Leaderboard,
    LeaderboardRow,
    backbone_of,
    best_trial,
    close_stale_trials,
    count_trials,
    failure_counts,
    family_attr,
    finished_trials,
    format_failures,
    format_leaderboard,
    leaderboard,
    numeric_attrs,
    read_leaderboard,
    session_outcomes,
    trial_config,
    write_leaderboard,
)

__all__ = [
    "ESTIMATE_KEYS",
    "BATCH_SIZE_ATTR", "ERROR_ATTR", "FAIL_REASON_ATTR", "failure_counts", "format_failures", "read_failure",
    "session_outcomes", "CONFIG_ATTR", "FAMILY_ATTR", "FORMAT_VERSION", "INTERRUPTED_ATTR", "LEADERBOARD_SCHEMA", "MLFLOW_RUN_ATTR", "OOF_COLUMNS",
    "OPTUNA_NUMBER_KEY", "Leaderboard", "LeaderboardRow", "LocationError", "Locations", "StudyFormatError",
    "StudyPaths", "add_location_flags", "backbone_of", "best_trial", "check_format", "close_stale_trials", "count_trials",
    "default_storage_url", "default_tracking_uri", "exit_error", "family_attr", "finished_trials", "folder_format",
    "format_leaderboard", "from_args", "latest_study", "leaderboard", "numeric_attrs", "read_json",
    "read_leaderboard", "read_oof", "resolve", "sqlite_path", "studies_in", "trial_config", "write_json", "write_leaderboard", "write_oof",
    "HIDDEN", "STORAGE_ENV", "TRACKING_ENV", "RDBStore", "StorageError", "open_storage", "public", "public_argv", "reveal",
    "warn_if_on_command_line",
]  # fmt: skip
