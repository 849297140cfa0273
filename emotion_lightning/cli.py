"""The command line: ``emotion-lightning fit|validate|test|predict`` (also ``python -m emotion_lightning``)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from emotion_lightning.callbacks import PredictionWriter
from emotion_lightning.data import EmotionDataModule
from emotion_lightning.model import EmotionClassifier
from emotion_lightning.precision import runnable_precision


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
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
                # A new run into the same folder replaces best.ckpt instead of adding best-v1.ckpt.
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        precision, message = runnable_precision(config.trainer.precision, config.trainer.accelerator)
        if message:
            rank_zero_info(message)
            config.trainer.precision = precision
        if config.checkpoint.dirpath is None:
            root = config.trainer.default_root_dir or "."
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")


def main(args: list[str] | None = None) -> EmotionCLI:
    """Run the CLI with ``args`` (default: the command line); returns the CLI for inspection."""
    return EmotionCLI(
        EmotionClassifier,
        EmotionDataModule,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
