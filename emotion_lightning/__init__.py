"""Fine-tune DistilBERT for emotion recognition (dair-ai/emotion) with PyTorch Lightning.

The public names load on first use, so that ``import emotion_lightning`` (and ``emotion-lightning --help``)
does not import torch and Lightning until they are needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "LABELS": "emotion_lightning.data",
    "EmotionDataModule": "emotion_lightning.data",
    "EmotionClassifier": "emotion_lightning.model",
    "EmotionPredictor": "emotion_lightning.predictor",
    "Prediction": "emotion_lightning.predictor",
    "EmotionLightningError": "emotion_lightning.errors",
    "PredictionWriter": "emotion_lightning.callbacks",
    "NonFiniteLossGuard": "emotion_lightning.callbacks",
    "ResumeCheckpoint": "emotion_lightning.callbacks",
    "EvaluationReports": "emotion_lightning.callbacks",
    "AtomicCheckpointIO": "emotion_lightning.checkpoints",
    "export_huggingface": "emotion_lightning.export",
    "export_onnx": "emotion_lightning.export",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'emotion_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
