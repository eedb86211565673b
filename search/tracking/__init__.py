"""MLflow tracking of a study from the driver: its experiment, parent run and one child run per trial.

`tracker`: the tracking URI, and `StudyTracker`, which logs every run through explicit run ids.
`run_notes`: what the study's two AUCs mean, said the same way in Optuna and in MLflow (notes, metric names).
`outbox`: what the driver could not log while tracking failed, kept in the study folder and sent later.
`figures`: ROC curves drawn once for everyone: per trial in MLflow, and in the study report.
"""
