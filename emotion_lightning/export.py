"""Export a checkpoint for use without this package: a Hugging Face model folder, and ONNX.

emotion-lightning export runs/offline/version_0/checkpoints/best.ckpt exported/ [--onnx]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch

from emotion_lightning.checkpoints import read_checkpoint, trained_max_length
from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError
from emotion_lightning.model import EmotionClassifier

ONNX_FILE_NAME = "model.onnx"


class ExportError(EmotionLightningError, OSError):
    """An export that cannot be written as asked."""


def export_huggingface(model: EmotionClassifier, folder: str | Path, max_length: int | None = None) -> Path:
    """Model, config (with ``id2label``) and tokenizer, loadable by ``transformers.pipeline``.

    ``max_length`` (the length the model was trained with) becomes the tokenizer's ``model_max_length``,
    so that ``pipeline(..., truncation=True)`` cuts texts where training did.
    """
    folder = Path(folder)
    model.model.save_pretrained(folder)
    tokenizer = model.tokenizer
    if max_length is not None:
        tokenizer.model_max_length = min(max_length, tokenizer.model_max_length)
    tokenizer.save_pretrained(folder)
    return folder


def export_onnx(model: EmotionClassifier, path: str | Path, opset: int = 17) -> Path:
    """An ONNX graph ``(input_ids, attention_mask) -> logits`` with dynamic batch and sequence length."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # EmotionClassifier.forward is already (input_ids, attention_mask) -> logits.
    module = model.float().eval().cpu()
    example = model.tokenizer(["an example text", "a second, longer example text"], padding=True, return_tensors="pt")
    dynamic = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def _check_target(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"{folder} exists and is not an empty folder; choose a new folder (nothing was written)")


def main(argv: list[str] | None = None) -> None:
    """``emotion-lightning export CHECKPOINT FOLDER [--onnx]``."""
    parser = argparse.ArgumentParser(
        prog="emotion-lightning export",
        description="Write a checkpoint as a Hugging Face model folder (and optionally ONNX), usable without "
        "emotion_lightning: transformers.pipeline('text-classification', model=FOLDER).",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by fit")
    parser.add_argument("folder", type=Path, help="output folder (created; must not hold anything yet)")
    parser.add_argument("--onnx", action="store_true", help=f"also write FOLDER/{ONNX_FILE_NAME}")
    args = parser.parse_args(argv)
    # Everything that can fail for the user's reasons is checked before anything is written.
    if args.onnx and importlib.util.find_spec("onnx") is None:
        raise ExportError(
            "--onnx needs the onnx package: pip install 'emotion-lightning[export]' "
            "(or pip install onnx onnxruntime); nothing was written"
        )
    _check_target(args.folder)
    checkpoint = read_checkpoint(args.checkpoint)
    model = EmotionClassifier.from_checkpoint(checkpoint)
    max_length = trained_max_length(checkpoint)
    # Written beside the target and renamed into place: a failed export leaves no half-written folder.
    args.folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{args.folder.name}-", dir=args.folder.parent))
    try:
        export_huggingface(model, building, max_length)
        if args.onnx:
            export_onnx(model, building / ONNX_FILE_NAME)
        if args.folder.exists():
            args.folder.rmdir()  # empty, as checked
        building.rename(args.folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    say(f"Hugging Face model folder: {args.folder}")
    if args.onnx:
        say(f"ONNX model: {args.folder / ONNX_FILE_NAME}")
