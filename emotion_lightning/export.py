"""Export a checkpoint for use without this package: a Hugging Face model folder, and ONNX.

emotion-lightning export runs/offline/version_0/checkpoints/best.ckpt exported/ [--onnx]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError

if TYPE_CHECKING:  # torch and Lightning load when an export runs, not for `export --help`
    from emotion_lightning.model import EmotionClassifier

ONNX_FILE_NAME = "model.onnx"


class ExportError(EmotionLightningError, OSError):
    """An export that cannot be written as asked."""


def export_huggingface(model: EmotionClassifier, folder: str | Path) -> Path:
    """Model, config (with ``id2label``) and tokenizer, loadable by ``transformers.pipeline``.

    The model's ``max_length`` (what it was trained with) becomes the tokenizer's ``model_max_length``,
    so that ``pipeline(..., truncation=True)`` cuts texts where training did.
    """
    folder = Path(folder)
    model.model.save_pretrained(folder)
    tokenizer = model.tokenizer
    tokenizer.model_max_length = model.max_length
    tokenizer.save_pretrained(folder)
    return folder


def export_onnx(model: EmotionClassifier, path: str | Path, opset: int = 17) -> Path:
    """An ONNX graph ``(input_ids, attention_mask) -> logits`` with dynamic batch and sequence length."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # EmotionClassifier.forward is already (input_ids, attention_mask) -> logits.
    module = model.float().eval().cpu()
    example = model.tokenizer(["an example text", "a second, longer example text"], padding=True, return_tensors="pt")
    dynamic = {0: "batch", 1: "sequence"}
    # The tracer warns about every Python-level shape check in the transformer's code ("the exported graph
    # will produce incorrect results"); check_onnx runs the graph on other shapes and proves it instead.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The exporter's caution about negative indices: the model's indices are positions, never negative.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
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


def check_onnx(model: EmotionClassifier, path: Path) -> float:
    """The largest difference between the ONNX graph's logits and the model's, on texts of other lengths and
    batch sizes than the export traced; an :class:`ExportError` if it is more than rounding."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    texts = ["i feel it", "a longer text than the one the graph was traced with, to check every shape", "ok"]
    encoded = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(encoded["input_ids"], encoded["attention_mask"]).numpy()
    inputs = {name: encoded[name].numpy() for name in ("input_ids", "attention_mask")}
    difference = float(np.abs(session.run(None, inputs)[0] - expected).max())
    if difference > 1e-3:
        raise ExportError(f"the ONNX graph's logits differ from the checkpoint's by {difference:.2g}; not exported")
    return difference


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
    # A link to an (empty) folder: the export goes into the folder it points to.
    target = args.folder.resolve() if args.folder.is_symlink() else args.folder
    _check_target(target)
    from emotion_lightning.checkpoints import read_checkpoint
    from emotion_lightning.model import EmotionClassifier

    try:  # beside the target, as written next: a parent that is a file is named before the model loads
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = f"{error.filename} is not a folder" if isinstance(error, FileExistsError | NotADirectoryError) else error
        raise ExportError(f"cannot create the folder {args.folder}: {why}; nothing was written") from None
    model = EmotionClassifier.from_checkpoint(read_checkpoint(args.checkpoint))
    # Written beside the target and renamed into place: a failed export leaves no half-written folder.
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        export_huggingface(model, building)
        onnx_difference = None
        if args.onnx:
            onnx_difference = check_onnx(model, export_onnx(model, building / ONNX_FILE_NAME))
        _permissions_as_umask(building)
        try:
            if target.exists():
                target.rmdir()  # empty, as checked
            building.rename(target)
        except OSError:  # another export filled it meanwhile: that one is kept whole
            raise ExportError(
                f"{args.folder} was written by another export meanwhile; it is kept as that one wrote it, and "
                "nothing of this one (choose another folder)"
            ) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    files = sorted(path for path in target.iterdir() if path.is_file())
    listing = "".join(f"\n  {path.name}  {path.stat().st_size / 2**20:.1f} MiB" for path in files)
    say(f"Exported {args.checkpoint} to {args.folder} (texts cut at {model.max_length} tokens):{listing}")
    if onnx_difference is not None:
        say(f"ONNX graph checked against the checkpoint on other text lengths: logits within {onnx_difference:.1g}")


def _permissions_as_umask(folder: Path) -> None:
    """The folder and its files readable as the user's umask says (a temporary folder starts private)."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~mask)
