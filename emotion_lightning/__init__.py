"""Fine-tune DistilBERT for emotion recognition (dair-ai/emotion) with PyTorch Lightning."""

from emotion_lightning.callbacks import PredictionWriter
from emotion_lightning.data import LABELS, EmotionDataModule
from emotion_lightning.errors import EmotionLightningError
from emotion_lightning.export import export_huggingface, export_onnx
from emotion_lightning.guards import NonFiniteLossGuard
from emotion_lightning.model import EmotionClassifier
from emotion_lightning.predictor import EmotionPredictor, Prediction
from emotion_lightning.resume import AtomicCheckpointIO, ResumeCheckpoint

__all__ = [
    "LABELS",
    "AtomicCheckpointIO",
    "EmotionClassifier",
    "EmotionDataModule",
    "EmotionLightningError",
    "EmotionPredictor",
    "NonFiniteLossGuard",
    "Prediction",
    "PredictionWriter",
    "ResumeCheckpoint",
    "export_huggingface",
    "export_onnx",
]
__version__ = "0.1.0"
