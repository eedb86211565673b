"""One search session: configure it, run it, summarise it.

`options`: the flags of `stagesearch run` and their validation.
`configure`: flags and the stored study checked, the space and cohort chosen, `config.json` written.
`runner`: the session: cohort prepared, Optuna and MLflow records opened, trials tuned, outcome summarised.
`outcome`: the leaderboard and its estimates, the parent run's summary, registering the winner, what it says.
`baseline`: the non-deep baseline on the study's folds, logged to MLflow beside the trials.
`driver_lock`: one driver per study: the folder's lock, and a PostgreSQL study's advisory lock.
"""
