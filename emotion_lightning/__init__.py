"""Fine-tune DistilBERT for emotion recognition (dair-ai/emotion) with PyTorch Lightning."""

from emotion_lightning.callbacks import PredictionWriter
from emotion_lightning.data import LABELS, EmotionDataModule
from emotion_lightning.model import EmotionClassifier

__all__ = ["LABELS", "EmotionClassifier", "EmotionDataModule", "PredictionWriter"]
__version__ = "0.1.0"
