"""Fine-tune DistilBERT for emotion recognition (dair-ai/emotion) with PyTorch Lightning."""

from emotion_lightning.callbacks import PredictionWriter
from emotion_lightning.data import LABELS, EmotionDataModule
from emotion_lightning.export import export_huggingface, export_onnx
from emotion_lightning.model import EmotionClassifier
from emotion_lightning.predictor import EmotionPredictor, Prediction

__all__ = [
    "LABELS",
    "EmotionClassifier",
    "EmotionDataModule",
    "EmotionPredictor",
    "Prediction",
    "PredictionWriter",
    "export_huggingface",
    "export_onnx",
]
__version__ = "0.1.0"
