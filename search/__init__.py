"""stagesearch: search. The Ray Tune + Optuna search, in rooms, top to bottom (a room imports only the rooms
below it):

`commands`: thin `main`s of `stagesearch run|register|sync-tracking|promote|predict`.
`session`: configure one search, run it, summarise it.
`tune` (the only room that imports Ray) and `models` (register, the pyfunc, model card, predict).
`registry`, `tracking` (MLflow) and `stats` (estimates, sites, bootstrap).
`console` (log routing, live table) and `study` (the study folder and its stores).
`guard`: the database waited for, the disk watched, the tests' kill points (imports no other room).
`adapters` (beside the rooms): the only private parts of Ray, Optuna and MLflow the project touches, and why.
"""
