"""Registered staging models: made from a study's winner, described, and used to predict.

`register`: the winner's fold models (kept or refitted), evaluated on the hold-out, registered with its tags.
`staging_model`: the registered pyfunc (MLflow "models from code"): scans in, P(T2) and stage out.
`model_card`: the model card of a registered version and the registered model's description.
`model_spec`: the registered model's MLflow signature and pip requirements.
`predict`: new scans read and checked, the registered model resolved and loaded, its lines printed.
"""
