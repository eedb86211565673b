"""The commands: thin `main(argv)`s of `stagesearch <command>` that parse the flags, call the rooms, print.

`run`: `stagesearch run`, the search (`search.session.runner`).
`register`: `stagesearch register`, a study's winner into the Model Registry (`search.models.register`).
`sync_tracking`: `stagesearch sync-tracking`, what a search kept while MLflow failed (`search.tracking.outbox`).
`promote`: `stagesearch promote`, list the registered versions or move an alias, gated (`search.registry`).
`predict`: `stagesearch predict`, P(T2) and stage for new scans (`search.models.predict`).
"""
