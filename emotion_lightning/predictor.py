"""Classify texts from Python with a trained model: two lines, no Trainer needed.

predictor = EmotionPredictor.from_checkpoint("runs/offline/version_0/checkpoints/best.ckpt")
predictor(["I passed my exam!", "I am furious about this."])
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from emotion_lightning.checkpoints import read_checkpoint, trained_max_length
from emotion_lightning.data import EmotionDataModule
from emotion_lightning.model import EmotionClassifier
from emotion_lightning.precision import inference_precision

# Inference precisions; "auto" picks fp16 on CUDA, bf16 on a CPU that computes it natively, else fp32.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class Prediction:
    """One text's result: its label, that label's probability, and every class's probability.

    ``truncated`` says whether the text was longer than ``max_length`` tokens and was cut.
    """

    text: str
    label: str
    score: float
    probabilities: dict[str, float]
    truncated: bool = False


def check_texts(texts: Sequence[object]) -> list[str]:
    """The texts as a list, or a clear error naming every position that is not a non-blank string."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string (wrap it: [text])")
    texts = list(texts)
    not_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if not_strings:
        kinds = ", ".join(f"[{i}] {type(texts[i]).__name__}" for i in not_strings[:5])
        raise TypeError(f"texts must be strings; {len(not_strings)} are not: {kinds}")
    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank:
        raise ValueError(f"{len(blank)} texts are empty or only whitespace, at positions {blank[:10]}")
    return texts


class EmotionPredictor:
    """Batched prediction with a trained :class:`EmotionClassifier`.

    Texts are encoded exactly as ``emotion-lightning predict`` encodes them (the same
    :class:`EmotionDataModule` path): sorted by length and batched so that each batch pads little;
    the results come back in input order. Texts longer than ``max_length`` tokens are truncated
    (``Prediction.truncated``; a warning gives the count). Calls from several threads are safe.

    Args:
        model: the trained model.
        batch_size: texts per forward pass.
        max_length: longest text in tokens; from the checkpoint (what the model was trained with) when
            loaded with :meth:`from_checkpoint`.
        precision: ``auto`` (fp16 on CUDA, bf16 on a CPU that computes it natively, else fp32),
            ``32-true``, ``bf16-mixed`` or ``16-mixed``.
    """

    def __init__(self, model: EmotionClassifier, batch_size: int = 64, max_length: int = 512, precision="auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.labels = model.labels
        self.batch_size = batch_size
        # No longer than the model accepts (tokenizers of models without a limit report a huge number).
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self.precision = precision

    @classmethod
    def from_checkpoint(
        cls, checkpoint_path: str | Path, device: str | torch.device | None = None, **settings
    ) -> EmotionPredictor:
        """Load a checkpoint written by ``fit`` (offline: it holds the architecture, tokenizer and max_length).

        ``device`` defaults to CUDA when available, else CPU.
        """
        checkpoint = read_checkpoint(checkpoint_path)
        model = EmotionClassifier.from_checkpoint(checkpoint)
        trained_with = trained_max_length(checkpoint)
        if trained_with is not None:
            settings.setdefault("max_length", trained_with)
        return cls(model.to(_device(device)), **settings)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None, **settings):
        """Load a model folder as ``emotion-lightning export`` writes it (weights, config with labels, tokenizer)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        labels = [config.id2label[i] for i in range(len(config.id2label))]
        model = EmotionClassifier(backbone=str(folder), labels=labels)
        settings.setdefault("max_length", model.tokenizer.model_max_length)
        return cls(model.to(_device(device)), **settings)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _autocast(self):
        precision = inference_precision(self.device) if self.precision == "auto" else self.precision
        if precision == "32-true":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def predict_probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities, one row per text in input order (shape: texts x labels)."""
        return self._predict(check_texts(texts))[0]

    @torch.inference_mode()
    def _predict(self, texts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """Probabilities and whether each text was truncated, in input order."""
        if not texts:
            return torch.empty(0, len(self.labels)), []
        data = EmotionDataModule(
            backbone=self.model.hparams.backbone,
            labels=self.labels,
            max_length=self.max_length,
            eval_batch_size=self.batch_size,
            predict_texts=texts,
        )
        data.tokenizer = self.tokenizer
        data.setup("predict")
        probabilities = torch.empty(len(texts), len(self.labels))
        with self._autocast():
            for batch in data.predict_dataloader():
                inputs = (batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
                probabilities[batch["index"]] = self.model.probabilities(*inputs).cpu()
        return probabilities, data.splits["predict"].truncated.tolist()

    def __call__(self, texts: Sequence[str]) -> list[Prediction]:
        """Label, score and per-class probabilities for each text, in input order."""
        texts = check_texts(texts)
        probabilities, truncated = self._predict(texts)
        best = probabilities.argmax(dim=1).tolist()
        return [
            Prediction(text, self.labels[label], row[label], dict(zip(self.labels, row, strict=True)), cut)
            for text, row, label, cut in zip(texts, probabilities.tolist(), best, truncated, strict=True)
        ]


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
