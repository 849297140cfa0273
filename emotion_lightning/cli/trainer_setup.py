"""What a command adds to the Trainer its settings describe: a fit's ``metrics.csv`` in its run folder (beside any
logger given), the progress display and the fit's summary (or, when evaluating, stopping together), and checkpoint
files written atomically, the checkpoint already read handed over rather than read again."""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ProgressBar

from emotion_lightning.callbacks import BarWithLoss, LineProgress, RunSummary, StopTogether
from emotion_lightning.checkpoints import AtomicCheckpointIO
from emotion_lightning.runs.loggers import RunMetricsLogger

# Values of trainer.logger that mean "Lightning's default logger".
DEFAULT_LOGGER = (None, True)


def as_list(value) -> list:
    """A trainer setting that takes one object or a list of them, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def trainer_additions(subcommand: str, trainer_config: dict, started: float, already_read: dict[Path, dict]) -> dict:
    """The Trainer's ``logger``, ``callbacks`` and ``plugins``, from its settings (``trainer_config``, built) and what
    the command adds; ``started``: when the command started; ``already_read``: the checkpoint read, by its path."""
    kwargs = {}
    logger = trainer_config.get("logger")
    if logger in DEFAULT_LOGGER:
        # fit logs metrics.csv into its run folder; evaluating a checkpoint starts no new log.
        run_folder = trainer_config["default_root_dir"]
        kwargs["logger"] = RunMetricsLogger(run_folder) if subcommand == "fit" else False
    elif logger is not False and subcommand == "fit":
        # With W&B (or any logger) the run folder still gets its metrics.csv.
        kwargs["logger"] = [*as_list(logger), RunMetricsLogger(trainer_config["default_root_dir"])]
    # Progress: a rich bar in a terminal, lines in a log file; unless turned off or brought by the config.
    configured = as_list(trainer_config.get("callbacks"))
    extra = [RunSummary(started)] if subcommand == "fit" else [StopTogether()]
    wants_progress = trainer_config.get("enable_progress_bar") is not False
    if wants_progress and not any(isinstance(callback, ProgressBar) for callback in configured):
        extra.append(BarWithLoss() if sys.stdout.isatty() else LineProgress())
    kwargs["callbacks"] = [*configured, *extra]
    # Checkpoint files written atomically, unless the config brings its own checkpoint IO; the
    # checkpoint already read is not read again.
    plugins = as_list(trainer_config.get("plugins"))
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        kwargs["plugins"] = [*plugins, AtomicCheckpointIO(already_read)]
    return kwargs
