"""Export a checkpoint for use without this package: a Hugging Face model folder, and ONNX.

emotion-lightning export runs/offline/checkpoints/best.ckpt exported/ [--onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from emotion_lightning.model import EmotionClassifier

ONNX_FILE_NAME = "model.onnx"


def export_huggingface(model: EmotionClassifier, folder: str | Path) -> Path:
    """Model, config (with ``id2label``) and tokenizer, loadable by ``transformers.pipeline``."""
    folder = Path(folder)
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
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


def main(argv: list[str] | None = None) -> None:
    """``emotion-lightning export CHECKPOINT FOLDER [--onnx]``."""
    parser = argparse.ArgumentParser(
        prog="emotion-lightning export",
        description="Write a checkpoint as a Hugging Face model folder (and optionally ONNX), usable without "
        "emotion_lightning: transformers.pipeline('text-classification', model=FOLDER).",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by fit")
    parser.add_argument("folder", type=Path, help="output folder (created)")
    parser.add_argument("--onnx", action="store_true", help=f"also write FOLDER/{ONNX_FILE_NAME}")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")
    model = EmotionClassifier.load_from_checkpoint(args.checkpoint, map_location="cpu")
    export_huggingface(model, args.folder)
    print(f"Hugging Face model folder: {args.folder}")
    if args.onnx:
        export_onnx(model, args.folder / ONNX_FILE_NAME)
        print(f"ONNX model: {args.folder / ONNX_FILE_NAME}")
