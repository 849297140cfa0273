"""Export a checkpoint for use without this package: a Hugging Face model folder with its model card, and ONNX.

emotion-lightning export runs/offline/version_0/checkpoints/best.ckpt exported [--onnx true]
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
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
    # A backbone's own tokenizer config may say another length (MiniLM's: max_length 128): the model's is the one.
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(
        {"model_max_length": model.max_length, **({"max_length": model.max_length} if "max_length" in config else {})}
    )
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return folder


def model_card(model: EmotionClassifier, checkpoint: dict, score: float | None) -> str:
    """The folder's ``README.md``: the metadata the Hub and model browsers read (``pipeline_tag``, the labels, the
    data, the validation score), the training settings, and how to use it."""
    import yaml

    from emotion_lightning.data import EmotionDataModule

    # The model's record and the data module's (an older checkpoint has both in "training").
    training = {**checkpoint.get("training", {}), **checkpoint.get(EmotionDataModule.__qualname__, {})}
    settings = model.hparams
    backbone = str(settings.backbone)
    data = training.get("dataset") or "dair-ai/emotion"
    metadata = {
        "pipeline_tag": "text-classification",
        "library_name": "transformers",
        "language": ["en"],
        "tags": ["emotion", "text-classification", "emotion-lightning"],
        "labels": list(model.labels),
        **({"base_model": backbone} if "/" in backbone and not Path(backbone).exists() else {}),
        "widget": [{"text": "I am so happy today!"}],
    }
    if score is not None:
        result = {"type": "accuracy", "value": round(score, 4), "name": "validation accuracy"}
        dataset = {"name": data, "type": data, "split": "validation"}
        task = {"type": "text-classification", "name": "Text Classification"}
        metadata["model-index"] = [
            {"name": "emotion-lightning", "results": [{"task": task, "dataset": dataset, "metrics": [result]}]}
        ]
    rows = [
        ("backbone", backbone if not Path(backbone).exists() else Path(backbone).name),
        ("labels (id order)", ", ".join(model.labels)),
        ("validation accuracy", f"{score:.4f}" if score is not None else "not recorded"),
        ("texts cut at", f"{model.max_length} tokens"),
        ("training data", data),
        (
            "learning rate, weight decay, warmup",
            f"{settings.learning_rate:g}, {settings.weight_decay:g}, {settings.warmup_ratio:g}",
        ),
        ("label smoothing", f"{settings.label_smoothing:g}"),
        *((name.replace("_", " "), str(value)) for name, value in training.items() if name != "dataset"),
        ("epochs trained", str(checkpoint.get("epoch", 0) + 1) if "epoch" in checkpoint else "not recorded"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n# Emotion classifier\n\n"
        f"Classifies an English text into one of {len(model.labels)} emotions: {', '.join(model.labels)}. "
        "Fine-tuned with emotion-lightning (PyTorch Lightning).\n\n"
        f"| setting | value |\n| --- | --- |\n{table}\n\n## Use\n\n```python\n"
        "from transformers import pipeline\n\n"
        'classifier = pipeline("text-classification", model="PATH_OR_HUB_ID", truncation=True)\n'
        'classifier("I am furious about this.")\n```\n'
    )


def export_onnx(model: EmotionClassifier, path: str | Path, opset: int = 17) -> Path:
    """An ONNX graph ``(input_ids, attention_mask) -> logits`` for any batch of one text or more, and texts of up to
    the model's ``max_length`` tokens (its position table)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # EmotionClassifier.forward is already (input_ids, attention_mask) -> logits.
    module = model.float().eval().cpu()
    example = model.tokenizer(["an example text", "a second, longer example text"], padding=True, return_tensors="pt")
    dynamic = {0: "batch", 1: "sequence"}
    # The tracer warns about every Python-level shape check in the transformer's code ("the exported graph
    # will produce incorrect results"); check_onnx runs the graph on other shapes and proves it instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The exporter's caution about negative indices: the model's indices are positions, never negative.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        module.to_onnx(
            path,
            (example["input_ids"], example["attention_mask"]),
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


@dataclass(frozen=True)
class ExportSettings:
    """Write a checkpoint as a Hugging Face model folder (weights, config with the labels, tokenizer, model card),
    and ONNX with --onnx true, usable without emotion_lightning: transformers.pipeline('text-classification',
    model=FOLDER).

    Args:
        checkpoint: a .ckpt written by fit
        folder: the output folder (created; it must not hold anything yet)
        onnx: also write FOLDER/model.onnx (the export extra)
    """

    checkpoint: Path
    folder: Path
    onnx: bool = False


def export(settings: ExportSettings) -> Path:
    """Everything that can fail for the user's reasons is checked before anything is written."""
    if settings.onnx and importlib.util.find_spec("onnx") is None:
        raise ExportError(
            "--onnx needs the onnx package: pip install 'emotion-lightning[export]' "
            "(or pip install onnx onnxruntime); nothing was written"
        )
    # A link to an (empty) folder: the export goes into the folder it points to.
    target = settings.folder.resolve() if settings.folder.is_symlink() else settings.folder
    _check_target(target)
    try:  # beside the target, as written next: a parent that is a file is named before the model loads
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = f"{error.filename} is not a folder" if isinstance(error, FileExistsError | NotADirectoryError) else error
        raise ExportError(f"cannot create the folder {settings.folder}: {why}; nothing was written") from None
    from emotion_lightning.checkpoints import read_checkpoint, recorded_score
    from emotion_lightning.model import EmotionClassifier
    from emotion_lightning.runs import best_score, run_folder_of

    checkpoint = read_checkpoint(settings.checkpoint)
    model = EmotionClassifier.from_checkpoint(checkpoint)
    # Written beside the target and renamed into place: a failed export leaves no half-written folder.
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        export_huggingface(model, building)
        # The score the checkpoint recorded, or the best its run logged (checkpoints of version 0.3 record none).
        score = recorded_score(checkpoint) or best_score(run_folder_of(settings.checkpoint))
        (building / "README.md").write_text(model_card(model, checkpoint, score))
        onnx_difference = None
        if settings.onnx:
            onnx_difference = check_onnx(model, export_onnx(model, building / ONNX_FILE_NAME))
        _permissions_as_umask(building)
        try:
            if target.exists():
                target.rmdir()  # empty, as checked
            building.rename(target)
        except OSError:  # another export filled it meanwhile: that one is kept whole
            raise ExportError(
                f"{settings.folder} was written by another export meanwhile; it is kept as that one wrote it, and "
                "nothing of this one (choose another folder)"
            ) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    files = sorted(path for path in target.iterdir() if path.is_file())
    listing = "".join(f"\n  {path.name}  {path.stat().st_size / 2**20:.1f} MiB" for path in files)
    say(f"Exported {settings.checkpoint} to {settings.folder} (texts cut at {model.max_length} tokens):{listing}")
    if onnx_difference is not None:
        say(f"ONNX graph checked against the checkpoint on other text lengths: logits within {onnx_difference:.1g}")
    return target


def main(args: list[str]) -> None:
    """``emotion-lightning export CHECKPOINT FOLDER [--onnx true]``"""
    from emotion_lightning.cli.settings import parse_settings

    export(parse_settings(ExportSettings, args))


def _permissions_as_umask(folder: Path) -> None:
    """The folder and its files readable as the user's umask says (a temporary folder starts private)."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~mask)
