"""`emotion-lightning tune`: an Optuna study of ordinary `fit` runs on validation accuracy, resumable and shared.

    emotion-lightning tune -c reference -c offline --tune.trials 20

The settings are fit's (parsed and checked by fit's parser) and the study's (``--tune.*``). Every trial is a `fit`
of those settings (written once as ``<tune.output>/<study>/fit-config.yaml``) with the search space's values on
top, into a run folder of its own under ``<tune.output>/<study>/``. Each validation reports ``val/acc`` to the
study, which prunes hopeless trials (median pruner). The study lives in a database (SQLite by default; any SQL
server Optuna takes), so that a stopped tuner continues where it was with the same command, and tuners on several
machines share one study.

:mod:`~emotion_lightning.tune.command` runs the study; :mod:`~emotion_lightning.tune.space` reads and samples
the search space; :mod:`~emotion_lightning.tune.study` opens, shares and continues the study in its database;
:mod:`~emotion_lightning.tune.results` writes the best preset and the plots.
"""
