"""What keeps a study whole when the machine or its services fail: the bottom room, importing no other.

`db_wait`: every Optuna storage call waits, bounded, for a database that does not answer (a restart).
`disk`: the free space of the study folder's disk before each trial, and a disk-full error said plainly.
`kill_points`: named points where a test kills the driver, to prove that `--resume` recovers from each.
"""
