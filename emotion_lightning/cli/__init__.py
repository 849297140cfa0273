"""The command line, ``emotion-lightning SUBCOMMAND``: :mod:`~emotion_lightning.cli.commands` (the table of
subcommands, ``main``), :mod:`~emotion_lightning.cli.settings` and :mod:`~emotion_lightning.cli.config_files` (how
every subcommand reads its settings and YAML files), :mod:`~emotion_lightning.cli.lightning` (fit, validate, test,
predict on LightningCLI), :mod:`~emotion_lightning.cli.checkpoint_choice` (what ``--ckpt_path`` names) and
:mod:`~emotion_lightning.cli.trainer_setup` (what a command adds to the Trainer)."""

from emotion_lightning.cli.commands import PROG, SUBCOMMANDS, main, run

__all__ = ["PROG", "SUBCOMMANDS", "main", "run"]
