"""The commands: thin `main(argv)`s that parse the flags, call the rooms below and print (`stagesearch <command>`).

`run`: `stagesearch run`, the search (`search.session.runner`).
`register`: `stagesearch register`, a study's winner into the MLflow Model Registry (`search.models.register`).
`promote`: `stagesearch promote`, list the registered versions or move an alias, gated (`search.registry`).
`predict`: `stagesearch predict`, P(T2) and stage for new scans from a registered model (`search.models.predict`).
"""
