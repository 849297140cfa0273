"""Checkpoint files: written atomically, read once per command, and checked with a clear error when they can't be.

A checkpoint that is missing, a folder, truncated or not ours is named with what is wrong and what to do,
before any model is built.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from emotion_lightning.backbone import check_tokenizer_files
from emotion_lightning.errors import EmotionLightningError

# Where a checkpoint keeps the tokenizer's files (name -> bytes), and the val/acc its weights scored.
TOKENIZER_CHECKPOINT_KEY = "tokenizer_files"
SCORE_CHECKPOINT_KEY = "val_acc"


class CheckpointError(EmotionLightningError, OSError):
    """A checkpoint that cannot be read (missing, damaged, not ours) or written (a full disk) as asked."""


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by ``fit``, memory-mapped, checked whole before anything of it is used.

    Loads tensors and plain values only (``weights_only``): a checkpoint never runs code. Every member of
    the checkpoint's archive carries the CRC-32 that ``torch.save`` wrote with it; a damaged byte anywhere
    (a bad disk, a copy cut short and patched) is found before the weights are used. The tokenizer files
    it carries must have plain file names: they are data, never paths.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        if (path / "config.json").is_file():
            raise CheckpointError(
                f"{path} is a model folder (as `export` writes), not a checkpoint: give a .ckpt file that fit wrote "
                f"(<run>/checkpoints/best.ckpt), or load the folder with EmotionPredictor.from_pretrained('{path}') "
                f"or transformers.pipeline('text-classification', model='{path}')"
            )
        raise CheckpointError(f"checkpoint {path} is a folder; give a .ckpt file that fit wrote")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable checkpoint: it is truncated (a copy or download that did not finish?) "
            "or not a checkpoint at all"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        damaged = f"({error})"
    if damaged is not None:
        raise CheckpointError(
            f"{path} is damaged: {damaged} does not match the checksum written with it; "
            "copy the checkpoint again from where it was saved"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        # torch's own message suggests weights_only=False, which would run whatever the file holds: not passed on.
        raise CheckpointError(
            f"{path} is not an emotion-lightning checkpoint: it could not be read as tensors and plain values "
            f"({type(error).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path} is a PyTorch file but not an emotion-lightning checkpoint (no model settings)")
    if TOKENIZER_CHECKPOINT_KEY in checkpoint:
        try:
            check_tokenizer_files(checkpoint[TOKENIZER_CHECKPOINT_KEY])
        except ValueError as error:
            raise CheckpointError(f"{path} is refused: {error}") from None
    return checkpoint


def recorded_score(checkpoint: dict) -> float | None:
    """The ``val/acc`` of the weights, as recorded when the checkpoint was saved (None for older ones)."""
    score = checkpoint.get(SCORE_CHECKPOINT_KEY)
    return float(score) if isinstance(score, int | float) else None


def holds_training_state(checkpoint: dict) -> bool:
    """Whether a checkpoint can resume training (``last.ckpt``), not only weights (``best.ckpt``)."""
    return "optimizer_states" in checkpoint and "loops" in checkpoint


def model_settings(checkpoint: dict) -> dict:
    """The model's init arguments saved in a checkpoint.

    Lightning adds private keys (such as the CLI's ``_instantiator``) to the saved hyperparameters: left out.
    Checkpoints of version 0.2 kept ``max_length`` with the data module's settings: taken from there.
    """
    settings = {name: value for name, value in checkpoint["hyper_parameters"].items() if not name.startswith("_")}
    if "max_length" not in settings and "max_length" in checkpoint.get("datamodule_hyper_parameters", {}):
        settings["max_length"] = checkpoint["datamodule_hyper_parameters"]["max_length"]
    return settings


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to ``<name>.partial`` beside it, then renames it into place.

    The rename is atomic: a process killed while writing leaves the previous checkpoint whole
    (and a stale ``.partial`` file, replaced by the next save), never a truncated one.

    Args:
        already_read: checkpoints the command has read already, by path: returned instead of read again.
    """

    def __init__(self, already_read: dict[str, dict] | None = None):
        super().__init__()
        self._already_read = {
            str(Path(path).resolve()): checkpoint for path, checkpoint in (already_read or {}).items()
        }

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own writing
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial")
        try:
            with partial.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except Exception as error:
            partial.unlink(missing_ok=True)  # a half-written file would only hold the space that is missing
            if isinstance(error, OSError):
                why = error.strerror or str(error)
            elif shutil.disk_usage(path.parent).free < 2**20:  # torch says "unexpected pos ..." when the disk fills
                why = "No space left on device"
            else:
                raise
            kept = f"; the {path.name} written before is intact" if path.is_file() else ""
            raise CheckpointError(f"could not write the checkpoint {path}: {why}{kept}") from None

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if "://" not in str(path) and (checkpoint := self._already_read.pop(str(Path(path).resolve()), None)):
            return checkpoint
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
