"""Fine-tune DistilBERT for emotion recognition (dair-ai/emotion) with PyTorch Lightning, and use the result:

    from emotion_lightning import EmotionPredictor
    EmotionPredictor.from_checkpoint("runs/offline/version_0/checkpoints/best.ckpt")(["I passed my exam!"])

    EmotionPredictor   classify texts with a trained model (a checkpoint fit wrote, or a folder export wrote)
    EmotionClassifier  the LightningModule: DistilBERT (or another encoder) with a classification head
    EmotionDataModule  the LightningDataModule: the splits, tokenized as its model tokenizes
    LABELS             the label names, in the dataset's id order
    fit_callbacks      the callbacks the command line trains with, for a Trainer of your own
    main               the command line, ``emotion-lightning``

Train with ``emotion-lightning fit -c reference`` (the command line, :func:`main`), or from Python with
:class:`EmotionClassifier` and :class:`EmotionDataModule` in a Lightning ``Trainer``. The labels, in the dataset's id
order, are :data:`LABELS`. The rest (callbacks, checkpoint IO, export) is importable from its module:
``emotion_lightning.callbacks``, ``emotion_lightning.checkpoints``, ``emotion_lightning.export``.

The public names load on first use, so that ``import emotion_lightning`` (and ``emotion-lightning --help``)
does not import torch and Lightning until they are needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# Public name -> the module that defines it: what a user calls.
_PUBLIC = {
    "EmotionPredictor": "emotion_lightning.predictor",
    "Prediction": "emotion_lightning.predictor",
    "EmotionClassifier": "emotion_lightning.model",
    "EmotionDataModule": "emotion_lightning.data",
    "LABELS": "emotion_lightning.data",
    "EmotionLightningError": "emotion_lightning.errors",
    "fit_callbacks": "emotion_lightning.callbacks",
    "main": "emotion_lightning.cli",
}
# Importable from here as before, but documented in their own modules.
_FORMERLY_PUBLIC = {
    "PredictionWriter": "emotion_lightning.callbacks",
    "NonFiniteLossGuard": "emotion_lightning.callbacks",
    "ResumeCheckpoint": "emotion_lightning.callbacks",
    "EvaluationReports": "emotion_lightning.callbacks",
    "AtomicCheckpointIO": "emotion_lightning.checkpoints",
    "export_huggingface": "emotion_lightning.export",
    "export_onnx": "emotion_lightning.export",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name) or _FORMERLY_PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'emotion_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
