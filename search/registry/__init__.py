"""The MLflow Model Registry of staging models: the versions, their tags, and the gate on their aliases.

`versions`: score, list and rank the registered versions, resolve model URIs, move aliases behind the gate.
`gate`: what the promotion gate reads from a version's tags, and the rules it applies.
`version_tags`: what a registered version records so the gate can be honest (estimate, chance, threshold).
`table`: the versions as an aligned text table (`stagesearch promote --list`).

`DEFAULT_MODEL_NAME` lives here, imported without MLflow, so the commands' `--help` stays quick.
"""

DEFAULT_MODEL_NAME = "cervical-staging"
