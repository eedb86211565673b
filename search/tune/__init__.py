"""The Ray Tune wiring of a search; the only room that imports Ray.

`driver`: Ray started (or joined), trials sized, the Tuner built for what is left of the budget, and fitted.
`searcher`: Tune's public `Searcher` over Optuna's ask/tell: pruned trials told PRUNED, failed ones FAIL.
`tuning`: the sampler, ASHA on the per-epoch fold AUC, the driver's callbacks, the Tuner.
`trainable`: what one trial runs in a Ray worker: cross-validated training, reported per epoch.
`progress`: what the user sees while a search runs: a line per finished trial, the running trials.
`failures`: trials that fail alone, and when failures mean the whole search should stop.
`local_ray`: a local Ray on 127.0.0.1 only, with token authentication (set before Ray is imported).
"""
