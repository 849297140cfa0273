"""The command line: ``emotion-lightning fit|validate|test|predict`` (also ``python -m emotion_lightning``)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from emotion_lightning.backbone import tokenizer_from_files
from emotion_lightning.callbacks import PredictionWriter
from emotion_lightning.data import EmotionDataModule
from emotion_lightning.errors import EmotionLightningError
from emotion_lightning.guards import NonFiniteLossGuard
from emotion_lightning.model import TOKENIZER_CHECKPOINT_KEY, EmotionClassifier
from emotion_lightning.precision import runnable_precision
from emotion_lightning.reports import EvaluationReports
from emotion_lightning.resume import AtomicCheckpointIO, ResumeCheckpoint
from emotion_lightning.wandb_logging import SaveConfigToLoggers


def _as_list(value) -> list:
    """A trainer setting that takes one object or a list of them, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class EmotionCLI(LightningCLI):
    """LightningCLI with the model and data linked, best-checkpoint keeping and prediction output."""

    def add_arguments_to_parser(self, parser) -> None:
        # The model is the source of truth: `--ckpt_path` restores the model's arguments from the
        # checkpoint, and the data must then tokenize and label with the same backbone and labels.
        parser.link_arguments("model.backbone", "data.backbone")
        parser.link_arguments("model.labels", "data.labels")
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
                # A new run into the same folder replaces best.ckpt instead of adding best-v1.ckpt.
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(ResumeCheckpoint, "resume")
        parser.add_lightning_class_args(NonFiniteLossGuard, "loss_guard")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(EvaluationReports, "reports")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        precision, message = runnable_precision(config.trainer.precision, config.trainer.accelerator)
        if message:
            rank_zero_info(message)
            config.trainer.precision = precision
        if config.checkpoint.dirpath is None:
            root = config.trainer.default_root_dir or "."
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")

    def instantiate_trainer(self, **kwargs):
        # A rich progress bar, unless the config turns progress bars off or brings its own.
        trainer_config = self._get(self.config_init, "trainer", default={})
        configured = _as_list(trainer_config.get("callbacks"))
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(callback, ProgressBar) for callback in configured):
            kwargs.setdefault("callbacks", [*configured, RichProgressBar()])
        # Checkpoint files written atomically, unless the config brings its own checkpoint IO.
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs.setdefault("plugins", [*plugins, AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.subcommand in ("validate", "test", "predict"):
            self._tokenize_with_checkpoint_tokenizer()

    def _tokenize_with_checkpoint_tokenizer(self) -> None:
        """Evaluate with the tokenizer the checkpoint was trained with, not a fresh download."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        if TOKENIZER_CHECKPOINT_KEY in checkpoint:
            self.datamodule.tokenizer = tokenizer_from_files(checkpoint[TOKENIZER_CHECKPOINT_KEY])


def run(args: list[str] | None = None) -> EmotionCLI:
    """Run the CLI with ``args`` (default: the command line) and return it, for inspection."""
    return EmotionCLI(
        EmotionClassifier,
        EmotionDataModule,
        seed_everything_default=42,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """The console script and ``python -m emotion_lightning``: the Lightning subcommands, and ``export``.

    Errors in the input (files, arguments, environment) end the program with their one-line message
    and exit status 1; anything else is a bug and keeps its traceback.
    """
    args = sys.argv[1:] if args is None else list(args)
    try:
        if args[:1] == ["export"]:
            from emotion_lightning import export

            export.main(args[1:])
            return
        run(args)
    except EmotionLightningError as error:
        sys.exit(f"emotion-lightning: error: {error}")
