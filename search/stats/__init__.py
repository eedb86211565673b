"""The honest numbers of a study, from its out-of-fold tables: numpy, scipy and scikit-learn (no Ray, torch or
MLflow), so the report may use them.

`estimates`: the winner's selection-bias-corrected AUC (bootstrap bias-corrected CV).
`candidates`: the deep ensemble (the two best complete trials of each family, averaged) and the nested selection
over kinds.
`study_candidates`: a study's candidates of every kind, read from its tables (`leaderboard.json`'s `candidates`).
`candidates_text`: how they read (summary lines, parent-run metrics, deep vs radiomics in words).
`sites`: the winner per site, and whether the site alone predicts the stage.
`baseline_text`: how the non-deep baseline reads beside the winner (its row, the verdict, parent-run fields).
`predict_scores`: how a registered model did on labelled scans given to `stagesearch predict`.
"""
