"""`emotion-lightning fit|validate|test|predict`: LightningCLI with run folders, checked input, one checkpoint read."""

from __future__ import annotations

import inspect
import sys
import time
import warnings
from pathlib import Path

import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from emotion_lightning import runs
from emotion_lightning.callbacks import (
    BEST_CHECKPOINT_SETTINGS,
    EvaluationReports,
    NonFiniteLossGuard,
    PredictionWriter,
    ResumeCheckpoint,
    StopTogether,
    check_output_file,
)
from emotion_lightning.callbacks.prediction_writer import output_path
from emotion_lightning.checkpoints import (
    holds_training_state,
    model_settings,
    read_checkpoint,
)
from emotion_lightning.cli.checkpoint_choice import ReadCheckpoint, checkpoint_path, finished, say_which_checkpoint
from emotion_lightning.cli.config_files import check_yaml_files
from emotion_lightning.cli.settings import parser_error, parser_rules, settings_named_in_help, take_texts
from emotion_lightning.cli.trainer_setup import DEFAULT_LOGGER, trainer_additions
from emotion_lightning.console import COMMAND_STARTED, say
from emotion_lightning.data import EmotionDataModule
from emotion_lightning.errors import SettingError
from emotion_lightning.model import EmotionClassifier
from emotion_lightning.precision import prediction_precision, runnable_precision
from emotion_lightning.runs import loggers as run_logging
from emotion_lightning.sources import check_predict_file

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


class EmotionCLI(LightningCLI):
    """LightningCLI with the model's settings from a checkpoint, run folders, best-checkpoint keeping and
    prediction output.

    Args:
        started: ``time.monotonic()`` when the command started (what the fit's summary counts from).
        run_folders: the run folders this command claims and locks, released by whoever made it.
        texts: ``predict --text`` texts, as given: handed to the data module, never parsed.
    """

    help_subcommand: str | None = None  # whose --help an error points to, when it is not the one parsed

    def __init__(self, *args, started: float, run_folders: runs.HeldRunFolders, texts: list[str] = (), **kwargs):
        self.started, self.run_folders, self.texts = started, run_folders, list(texts)
        self.checkpoint: ReadCheckpoint | None = None
        self.precision_note: str | None = None
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # weights_only is no setting here: a checkpoint is only ever read the package's way (tensors, checked).
        return {name: skip | {"weights_only"} for name, skip in LightningCLI.subcommands().items()}

    def add_core_arguments_to_parser(self, parser) -> None:
        # The package's own settings first in `fit --help`, the Trainer's eighty after them.
        parser.add_lightning_class_args(EmotionClassifier, "model")
        parser.add_lightning_class_args(EmotionDataModule, "data")
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{name}": value for name, value in BEST_CHECKPOINT_SETTINGS.items()})
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
            subcommand = self.help_subcommand or (args[0] if args and args[0] in LIGHTNING_SUBCOMMANDS else "fit")
            trainer = [f"trainer.{name}" for name in inspect.signature(self.trainer_class.__init__).parameters]
            raise parser_error(str(error), [*settings_named_in_help(subcommand), *trainer], subcommand) from None
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self.precision_note = _set_runnable_precision(subcommand, config.trainer)  # once: printed or said
        if printing:
            self.print_config_and_exit()
        self._read_checkpoint_once()

    def print_config_and_exit(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        notes = []
        if self.precision_note:
            notes.append(f"trainer.precision: {self.precision_note}")
        if config.trainer.logger in DEFAULT_LOGGER and subcommand in ("fit", None):
            notes.append(
                "trainer.logger: the run folder's metrics.csv (emotion_lightning.runs.loggers.RunMetricsLogger)"
            )
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False))
        dumped = dumped[subcommand] if subcommand else dumped
        print("".join(f"# {note}\n" for note in notes) + yaml.safe_dump(dumped, sort_keys=False), end="")
        sys.exit(0)

    def _read_checkpoint_once(self) -> None:
        """Find and read ``--ckpt_path`` (checked, memory-mapped) and take the model's settings from it.

        Every form (a path, ``last``, ``best``, ``hpc``) goes through :func:`read_checkpoint`. The setting is then
        emptied: Lightning would read the file again for its settings (unchecked); the subcommand methods below
        hand the path to the Trainer, and the checkpoint IO gives Lightning the contents already read.
        """
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        config = self.config[subcommand]
        root = Path(config.trainer.default_root_dir or ".")
        given = config.get("ckpt_path")
        if given == "last" and subcommand == "fit":
            path = self._run_to_continue(root)
        else:
            path = checkpoint_path(subcommand, given, root)
        config.ckpt_path = None
        if path is None:
            return
        self.checkpoint = ReadCheckpoint(path, read_checkpoint(path))
        if subcommand == "fit" and not holds_training_state(self.checkpoint.contents):
            raise SettingError(
                f"--ckpt_path {path} holds the weights only ({runs.BEST_CHECKPOINT} is for validate, test, "
                f"predict and export); resume a run from its {runs.LAST_CHECKPOINT} (--ckpt_path last)"
            )
        if subcommand == "fit" and (done := finished(config, self.checkpoint.contents)):
            raise SettingError(
                f"--ckpt_path {path}: its run has finished ({done}); raise --trainer.max_epochs to train it further, "
                "or leave out --ckpt_path for a new run"
            )
        say_which_checkpoint(path, self.checkpoint.contents)
        settings = model_settings(self.checkpoint.contents)
        if subcommand != "fit":  # how to run the trained model is this command's to say, not how it was trained
            for name in ("compile", "int8"):
                settings.pop(name, None)
        self.config = self.parser.parse_object({subcommand: {"model": settings}}, self.config)

    def _run_to_continue(self, root: Path) -> Path | None:
        """``fit --ckpt_path last``: the ``last.ckpt`` of the newest run of these settings (its ``config.yaml``
        trains what this command trains), never another run's; None, said in one line, starts a new run."""
        asked = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))["fit"]
        asked["data"]["shuffle_seed"] = _shuffle_seed(self.config.fit)  # as the run's config.yaml has it
        skipped: list[str] = []
        run = runs.newest_run_of(root, asked, skipped)
        for line in skipped:
            say(line)
        if run is None:
            say(f"--ckpt_path last: no run under {root} trains these settings; starting a new run")
            return None
        last = run / runs.CHECKPOINT_FOLDER / runs.LAST_CHECKPOINT
        if not last.is_file():
            say(
                f"--ckpt_path last: the newest run of these settings, {run}, has no {runs.LAST_CHECKPOINT} (it "
                "stopped before its first save); starting a new run"
            )
            return None
        return last

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if self.precision_note:
            say(self.precision_note)
        config.data.shuffle_seed = _shuffle_seed(config)
        if self.subcommand != "fit":
            # The data module gives each process its share of the texts itself (the texts left to do, evenly; an
            # empty batch for a process with none): Lightning's samplers would repeat texts, or refuse a process none.
            config.trainer.use_distributed_sampler = False
        for name in ("max_epochs", "max_steps"):
            value = config.trainer.get(name)
            if value is not None and value < -1:
                raise SettingError(f"trainer.{name} must be -1 (no limit) or at least 0, got {value}")
        if self.subcommand == "predict":
            check_predict_file(config.data.predict_file)
            if self.texts and config.data.predict_file is not None:
                raise SettingError("give the texts to classify with --text or with --data.predict_file, not both")
        folder = self._run_folder()
        config.trainer.default_root_dir = str(folder)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(folder / runs.CHECKPOINT_FOLDER)
        if self.subcommand == "predict":  # checked before the model is built; the writer is given it
            output = output_path(config.prediction_writer.output_file, folder, config.data.predict_file)
            checkpoint = self.checkpoint.path if self.checkpoint else None
            check_output_file(output, reads=[config.data.predict_file, checkpoint, *self.config_files])
            config.prediction_writer.output_file = str(output)

    @property
    def config_files(self) -> list[Path]:
        """The config files given with ``-c`` / ``--config``."""
        return [Path(str(path)) for path in (self.config[self.subcommand].get("config") or [])]

    def _run_folder(self) -> Path:
        """Where this command writes: a new run folder for fit (or the resumed run's), else beside the checkpoint."""
        root = Path(self.config[self.subcommand].trainer.default_root_dir or ".")
        checkpoint = self.checkpoint.path if self.checkpoint else None
        checkpoint_run = runs.run_folder_of(checkpoint) if checkpoint else None
        if self.subcommand != "fit":
            return checkpoint_run or root
        if checkpoint_run is not None and checkpoint.name == runs.LAST_CHECKPOINT:
            # Resuming: the run continues in its own folder, unless a fit is still writing there.
            if runs.first_process_of_job() and not self.run_folders.lock(checkpoint_run):
                raise SettingError(
                    f"--ckpt_path {checkpoint}: its run {checkpoint_run} is still being trained by another "
                    "fit; wait for it to end (or stop it) before resuming"
                )
            return checkpoint_run
        if not runs.first_process_of_job():  # it claims none: ModelCheckpoint broadcasts the first's folder
            return root
        if not root.exists():
            self.run_folders.made_roots.add(root.name)
        try:
            folder = runs.claim_new_run_folder(root)
        except OSError as error:
            raise SettingError(f"cannot create a run folder in trainer.default_root_dir {root}: {error}") from None
        self.run_folders.lock(folder, created=True)
        return folder

    # -- building ------------------------------------------------------------------------------

    def instantiate_trainer(self, **kwargs):
        trainer_config = self.config_init[self.subcommand]["trainer"]
        read = {self.checkpoint.path: self.checkpoint.contents} if self.checkpoint else {}
        kwargs = {**trainer_additions(self.subcommand, trainer_config, self.started, read), **kwargs}
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            raise SettingError(f"trainer settings: {error}") from None
        for callback in trainer.callbacks:
            if isinstance(callback, run_logging.SaveConfigToRunFolder) and self.precision_note:
                callback.notes.append(f"trainer.precision: {self.precision_note}")
        return trainer

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.checkpoint is not None:
            # The tokenizer the checkpoint was trained with, before the data is tokenized with it.
            self.model.on_load_checkpoint(self.checkpoint.contents)
        self.datamodule.encode_like(self.model)
        if self.texts:
            # Given to the data module as they are, not through the settings: jsonargparse checks and copies a list
            # setting whole at every step (10,000 texts took minutes), and would read each text as YAML.
            self.datamodule.predict_texts = self.texts

    # -- the subcommands: the checkpoint read above is handed to the Trainer's call ---------------

    def _with_checkpoint(self, kwargs: dict) -> dict:
        return {**kwargs, "ckpt_path": str(self.checkpoint.path) if self.checkpoint else None}

    def fit(self, **kwargs) -> None:
        self.trainer.fit(**self._with_checkpoint(kwargs))

    def _evaluate(self, run, kwargs: dict):
        try:
            return run(**self._with_checkpoint(kwargs))
        except RuntimeError as error:
            # A collective that failed because another process stopped: said in one line by the callbacks.
            stop = StopTogether.of(self.trainer)
            if stop is not None and (stopped := stop.why_stopped(error)) is not None:
                raise stopped from None
            raise

    def validate(self, **kwargs):
        return self._evaluate(self.trainer.validate, kwargs)

    def test(self, **kwargs):
        return self._evaluate(self.trainer.test, kwargs)

    def predict(self, **kwargs):
        return self._evaluate(self.trainer.predict, kwargs)


def run(
    args: list[str], callbacks: list | None = None, started: float | None = None, texts: list[str] = ()
) -> EmotionCLI:
    """Run the CLI with ``args`` and return it, for inspection.

    ``callbacks``: Lightning callbacks added to the ones the settings make (the tuner's report to its study);
    ``started``: when the command started (default: now); ``texts``: what ``predict --text`` gave.
    """
    check_yaml_files(args)
    # Given as a list (to drop --verbose, and from tests): LightningCLI's warning about that is for other cases.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    held, failed, rules = runs.HeldRunFolders(), True, parser_rules()
    try:
        cli = EmotionCLI(
            EmotionClassifier,
            EmotionDataModule,
            started=time.monotonic() if started is None else started,
            run_folders=held,
            texts=texts,
            seed_everything_default=42,
            save_config_callback=run_logging.SaveConfigToRunFolder,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            # The model summary is noise for a model chosen by name; --trainer.enable_model_summary true shows it.
            trainer_defaults={"enable_model_summary": False, **({"callbacks": callbacks} if callbacks else {})},
            parser_kwargs={"prog": "emotion-lightning", **rules}
            | {subcommand: dict(rules) for subcommand in LIGHTNING_SUBCOMMANDS},  # LightningCLI adds to them
            args=list(args),
        )
        failed = False
        return cli
    finally:
        held.release(failed)
        # Whatever way the command ended, a W&B run it started is finished now, while its closing lines are still
        # plain text in a log file (at Python's exit they would not be).
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def _shuffle_seed(config) -> int:
    """The data module's shuffling seed: as given, else the run's ``seed_everything`` (an int once LightningCLI has
    drawn one for ``true``; 0 before)."""
    seed = config.get("seed_everything")
    return config.data.shuffle_seed if config.data.shuffle_seed is not None else seed if type(seed) is int else 0


def _set_runnable_precision(subcommand: str | None, trainer) -> str | None:
    """Set ``trainer.precision`` (the parsed Trainer settings) to what runs here: ``predict`` without one takes the
    predictor's; fp16 becomes bf16 or fp32 without CUDA. The message saying so, or None."""
    if subcommand == "predict":
        trainer.precision = prediction_precision(trainer.precision, trainer.accelerator)
    trainer.precision, message = runnable_precision(trainer.precision, trainer.accelerator)
    return message


def main(args: list[str]) -> None:
    """``emotion-lightning fit|validate|test|predict ...``"""
    args, texts = take_texts(args) if args[0] == "predict" else (args, [])
    run(args, started=COMMAND_STARTED, texts=texts)
