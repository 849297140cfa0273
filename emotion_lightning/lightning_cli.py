"""`emotion-lightning fit|validate|test|predict`: LightningCLI with run folders, checked input, one checkpoint read."""

from __future__ import annotations

import inspect
import sys
import time
import warnings
from argparse import ArgumentError
from pathlib import Path

import yaml
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from emotion_lightning import runs
from emotion_lightning.callbacks import (
    BarWithLoss,
    EvaluationReports,
    LineProgress,
    NonFiniteLossGuard,
    PredictionWriter,
    ResumeCheckpoint,
    RunSummary,
    check_output_file,
)
from emotion_lightning.checkpoints import AtomicCheckpointIO, holds_training_state, model_settings, read_checkpoint
from emotion_lightning.cli import settings_named_in_help
from emotion_lightning.console import COMMAND_STARTED, say, show_messages
from emotion_lightning.data import EmotionDataModule
from emotion_lightning.errors import SettingError, parser_error
from emotion_lightning.model import EmotionClassifier
from emotion_lightning.precision import runnable_precision
from emotion_lightning.sources import check_predict_file, check_yaml_files

PARSER_RULES = {"exit_on_error": False, "allow_abbrev": False}
# Values of trainer.logger that mean "Lightning's default logger".
DEFAULT_LOGGER = (None, True)


def _as_list(value) -> list:
    """A trainer setting that takes one object or a list of them, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class EmotionCLI(LightningCLI):
    """LightningCLI with the model and data linked, run folders, best-checkpoint keeping and prediction output."""

    first_in_process = True
    # Data settings that always take the model's value.
    LINKED = ("backbone", "labels", "max_length")
    # The run folder the current fit created: removed again if the fit fails before writing anything in it.
    last_new_run_folder: Path | None = None

    def __init__(self, *args, **kwargs):
        # The first command of a process counts from the process's start (imports included); later ones
        # (the tuner's trials) from their own.
        self.started = COMMAND_STARTED if EmotionCLI.first_in_process else time.monotonic()
        EmotionCLI.first_in_process = False
        # The --ckpt_path checkpoint, read once: its settings, tokenizer and weights all come from here.
        self.checkpoint: dict | None = None
        self.checkpoint_path: Path | None = None
        self.precision_note: str | None = None
        super().__init__(*args, **kwargs)

    def add_core_arguments_to_parser(self, parser) -> None:
        # The package's own settings first in `fit --help`, the Trainer's eighty after them.
        parser.add_lightning_class_args(EmotionClassifier, "model")
        parser.add_lightning_class_args(EmotionDataModule, "data")
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def add_arguments_to_parser(self, parser) -> None:
        # The model is the source of truth: `--ckpt_path` restores the model's arguments from the
        # checkpoint, and the data must then tokenize and label with the same backbone and labels.
        for setting in self.LINKED:
            parser.link_arguments(f"model.{setting}", f"data.{setting}")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_top_k": 1,
                # last.ckpt is kept by ResumeCheckpoint ("resume"), at every validation end.
                "checkpoint.save_last": False,
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,
                # best.ckpt is for evaluating, predicting and exporting: weights, settings and tokenizer, a third
                # of the size with the optimizer's state (resuming uses last.ckpt, which has everything).
                "checkpoint.save_weights_only": True,
            }
        )
        parser.add_lightning_class_args(ResumeCheckpoint, "resume")
        parser.add_lightning_class_args(NonFiniteLossGuard, "loss_guard")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(EvaluationReports, "reports")

    # -- before anything is built: the checkpoint, the run folder, the inputs ----------------------

    def parse_arguments(self, parser, args) -> None:
        # --print_config is answered here rather than by jsonargparse, to show what will run (the precision
        # this machine gives, the logger that writes metrics.csv), not only what was asked.
        printing = [arg for arg in args if arg == "--print_config" or arg.startswith("--print_config=")]
        try:
            super().parse_arguments(parser, [arg for arg in args if arg not in printing])
        except ArgumentError as error:
            subcommand = args[0] if args else "fit"
            trainer = [f"trainer.{name}" for name in inspect.signature(self.trainer_class.__init__).parameters]
            raise parser_error(str(error), [*settings_named_in_help(subcommand), *trainer], subcommand) from None
        if printing:
            self._print_config_and_exit()
        self._read_checkpoint_once()

    def _print_config_and_exit(self) -> None:
        subcommand = self.config["subcommand"]
        config = self.config[subcommand]
        notes = []
        precision, message = runnable_precision(config.trainer.precision, config.trainer.accelerator)
        if message:
            config.trainer.precision = precision
            notes.append(f"trainer.precision: {message}")
        if config.trainer.logger in DEFAULT_LOGGER and subcommand == "fit":
            notes.append("trainer.logger: the run folder's metrics.csv (emotion_lightning.runs.RunMetricsLogger)")
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False))[subcommand]
        print("".join(f"# {note}\n" for note in notes) + yaml.safe_dump(dumped, sort_keys=False), end="")
        sys.exit(0)

    def _read_checkpoint_once(self) -> None:
        """Find and read ``--ckpt_path`` (checked, memory-mapped) and take the model's settings from it.

        Every form (a path, ``last``, ``best``, ``hpc``) goes through :func:`read_checkpoint`; Lightning is
        then handed the path with the checkpoint already read, so it never opens the file on its own.
        """
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        config = self.config[subcommand]
        root = Path(config.trainer.default_root_dir or ".")
        path = self._checkpoint_path(subcommand, config.get("ckpt_path"), root)
        config.ckpt_path = None  # given back in before_instantiate_classes, once read here
        if path is None:
            return
        self.checkpoint, self.checkpoint_path = read_checkpoint(path), path
        if subcommand == "fit" and not holds_training_state(self.checkpoint):
            raise SettingError(
                f"--ckpt_path {path} holds the weights only ({runs.BEST_CHECKPOINT} is for validate, test, "
                f"predict and export); resume a run from its {runs.LAST_CHECKPOINT} (--ckpt_path last)"
            )
        settings = model_settings(self.checkpoint)
        self.config = self.parser.parse_object({subcommand: {"model": settings}}, self.config)

    def _checkpoint_path(self, subcommand: str, given: str | None, root: Path) -> Path | None:
        """The checkpoint file ``--ckpt_path`` names: a path, or ``last``/``best`` of the newest run, or ``hpc``."""
        if given is None:
            if subcommand == "fit":
                return None
            raise SettingError(
                f"{subcommand} needs a trained model: give --ckpt_path, a checkpoint that fit wrote "
                f"(<run folder>/{runs.CHECKPOINT_FOLDER}/{runs.BEST_CHECKPOINT}), or `best` / `last` for the "
                "newest run under trainer.default_root_dir"
            )
        if given == "hpc":
            found = runs.hpc_checkpoint(root)
        elif given in ("last", "best"):
            found = runs.newest_checkpoint(root, f"{given}.ckpt")
        else:
            return Path(given)
        if found is None and subcommand == "fit" and given == "last":
            rank_zero_warn(f"--ckpt_path last: no run in {root} has a {runs.LAST_CHECKPOINT} yet; starting a new run")
        elif found is None:
            wanted = "hpc_ckpt_N.ckpt" if given == "hpc" else f"{runs.CHECKPOINT_FOLDER}/{given}.ckpt"
            raise SettingError(f"--ckpt_path {given}: no {wanted} under trainer.default_root_dir {root}")
        return found

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        config.ckpt_path = str(self.checkpoint_path) if self.checkpoint_path else None
        precision, message = runnable_precision(config.trainer.precision, config.trainer.accelerator)
        self.precision_note = message
        if message:
            say(message)
            config.trainer.precision = precision
        for name in ("max_epochs", "max_steps"):
            value = config.trainer.get(name)
            if value is not None and value < -1:
                raise SettingError(f"trainer.{name} must be -1 (no limit) or at least 0, got {value}")
        if self.subcommand == "predict":
            check_predict_file(config.data.predict_file)
        folder = self._run_folder(config)
        config.trainer.default_root_dir = str(folder)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(folder / runs.CHECKPOINT_FOLDER)
        if self.subcommand == "predict":
            output = PredictionWriter(config.prediction_writer.output_file).output_path(
                folder, config.data.predict_file
            )
            check_output_file(output, reads=[config.data.predict_file, self.checkpoint_path, *self.config_files])
            config.prediction_writer.output_file = str(output)

    @property
    def config_files(self) -> list[Path]:
        """The config files given with ``-c`` / ``--config``."""
        return [Path(str(path)) for path in (self.config[self.subcommand].get("config") or [])]

    def _run_folder(self, config) -> Path:
        """Where this command writes: a new run folder for fit (or the resumed run's), else beside the checkpoint."""
        root = Path(config.trainer.default_root_dir or ".")
        checkpoint_run = runs.run_folder_of(config.ckpt_path) if config.get("ckpt_path") else None
        if self.subcommand != "fit":
            return checkpoint_run or root
        if checkpoint_run is not None and Path(config.ckpt_path).name == runs.LAST_CHECKPOINT:
            # Resuming: the run continues in its own folder, unless a fit is still writing there.
            if runs.first_process_of_job() and not runs.lock_run_folder(checkpoint_run):
                raise SettingError(
                    f"--ckpt_path {config.ckpt_path}: its run {checkpoint_run} is still being trained by another "
                    "fit; wait for it to end (or stop it) before resuming"
                )
            return checkpoint_run
        try:
            folder = runs.shared_new_run_folder(root)
        except OSError as error:
            raise SettingError(f"cannot create a run folder in trainer.default_root_dir {root}: {error}") from None
        if runs.first_process_of_job():
            runs.lock_run_folder(folder)
        EmotionCLI.last_new_run_folder = folder
        return folder

    # -- building ------------------------------------------------------------------------------

    def instantiate_trainer(self, **kwargs):
        trainer_config = self.config_init[self.subcommand]["trainer"]
        logger = trainer_config.get("logger")
        if logger in DEFAULT_LOGGER:
            # fit logs metrics.csv into its run folder; evaluating a checkpoint starts no new log.
            run_folder = trainer_config["default_root_dir"]
            kwargs["logger"] = runs.RunMetricsLogger(run_folder) if self.subcommand == "fit" else False
        elif logger is not False and self.subcommand == "fit":
            # With W&B (or any logger) the run folder still gets its metrics.csv.
            kwargs["logger"] = [*_as_list(logger), runs.RunMetricsLogger(trainer_config["default_root_dir"])]
        # Progress: a rich bar in a terminal, lines in a log file; unless turned off or brought by the config.
        configured = _as_list(trainer_config.get("callbacks"))
        extra = [] if self.subcommand != "fit" else [RunSummary(self.started)]
        wants_progress = trainer_config.get("enable_progress_bar") is not False
        if wants_progress and not any(isinstance(callback, ProgressBar) for callback in configured):
            extra.append(BarWithLoss() if sys.stdout.isatty() else LineProgress())
        kwargs.setdefault("callbacks", [*configured, *extra])
        # Checkpoint files written atomically, unless the config brings its own checkpoint IO; the
        # checkpoint already read is not read again.
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            already_read = {self.config[self.subcommand].ckpt_path: self.checkpoint} if self.checkpoint else {}
            kwargs.setdefault("plugins", [*plugins, AtomicCheckpointIO(already_read)])
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            raise SettingError(f"trainer settings: {error}") from None
        for callback in trainer.callbacks:
            if isinstance(callback, runs.SaveConfigToRunFolder) and self.precision_note:
                callback.notes.append(f"trainer.precision: {self.precision_note}")
        return trainer

    def after_fit(self) -> None:
        # Ended here rather than when Python exits: W&B's closing lines are then plain text in a log file.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.checkpoint is not None:
            # The tokenizer the checkpoint was trained with, before the data is tokenized with it.
            self.model.on_load_checkpoint(self.checkpoint)
        self.datamodule.encode_like(self.model)


def run(args: list[str] | None = None, callbacks: list | None = None) -> EmotionCLI:
    """Run the CLI with ``args`` (default: the command line) and return it, for inspection.

    ``callbacks``: Lightning callbacks added to the ones the settings make (the tuner's report to its study).
    """
    args = sys.argv[1:] if args is None else list(args)
    check_yaml_files(args)
    show_messages()
    # Given as a list (to drop --verbose, and from tests): LightningCLI's warning about that is for other cases.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        return EmotionCLI(
            EmotionClassifier,
            EmotionDataModule,
            seed_everything_default=42,
            save_config_callback=runs.SaveConfigToRunFolder,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            # The model summary is noise for a model chosen by name; --trainer.enable_model_summary true shows it.
            trainer_defaults={"enable_model_summary": False, **({"callbacks": callbacks} if callbacks else {})},
            # Errors raised, not printed after a page of usage: the command line says them in one line. A prefix of
            # a setting's name is not taken for it (--trainer.max_epoch is a mistake, not max_epochs).
            parser_kwargs={"prog": "emotion-lightning", **PARSER_RULES}
            | {subcommand: PARSER_RULES for subcommand in ("fit", "validate", "test", "predict")},
            args=args,
        )
    except BaseException:
        if (folder := EmotionCLI.last_new_run_folder) is not None and runs.first_process_of_job():
            runs.remove_if_unused(folder)
        raise
    finally:
        EmotionCLI.last_new_run_folder = None
        runs.release_run_folders()
