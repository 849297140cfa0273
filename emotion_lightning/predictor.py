"""Classify texts from Python with a trained checkpoint: two lines, no Trainer needed.

predictor = EmotionPredictor.from_checkpoint("runs/offline/checkpoints/best.ckpt")
predictor(["I passed my exam!", "I am furious about this."])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from emotion_lightning.data import PadToLongest, truncate
from emotion_lightning.model import EmotionClassifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One text's result: its label, that label's probability, and every class's probability."""

    text: str
    label: str
    score: float
    probabilities: dict[str, float]


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

    Texts are sorted by length and batched so that each batch pads little; the results come back in
    input order. Texts longer than ``max_length`` tokens are truncated, and the count is logged and
    kept in ``last_truncated``.
    """

    def __init__(self, model: EmotionClassifier, batch_size: int = 64, max_length: int = 512):
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.labels = model.labels
        self.batch_size = batch_size
        limit = model.model.config.max_position_embeddings
        self.max_length = min(max_length, limit)
        self.last_truncated = 0

    @classmethod
    def from_checkpoint(
        cls, checkpoint_path: str | Path, device: str | torch.device | None = None, **settings
    ) -> EmotionPredictor:
        """Load a checkpoint written by ``fit`` (offline: it holds the architecture and tokenizer).

        ``device`` defaults to CUDA when available, else CPU.
        """
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = EmotionClassifier.load_from_checkpoint(checkpoint_path, map_location=device)
        return cls(model, **settings)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def predict_probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities, one row per text in input order (shape: texts x labels)."""
        return self._probabilities(check_texts(texts))

    @torch.inference_mode()
    def _probabilities(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, len(self.labels))
        encoded = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        self.last_truncated = sum(len(ids) > self.max_length for ids in encoded)
        if self.last_truncated:
            log.warning("%d of %d texts were truncated to %d tokens", self.last_truncated, len(texts), self.max_length)
        encoded = [truncate(ids, self.max_length) for ids in encoded]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]), reverse=True)
        probabilities = torch.empty(len(texts), len(self.labels))
        collate = PadToLongest(self.tokenizer.pad_token_id)
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")
        for start in range(0, len(order), self.batch_size):
            positions = order[start : start + self.batch_size]
            batch = collate({"input_ids": [encoded[i] for i in positions], "index": positions})
            with autocast:
                logits = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            probabilities[positions] = logits.float().softmax(dim=-1).cpu()
        return probabilities

    def __call__(self, texts: Sequence[str]) -> list[Prediction]:
        """Label, score and per-class probabilities for each text, in input order."""
        texts = check_texts(texts)
        results = []
        for text, row in zip(texts, self._probabilities(texts).tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            results.append(Prediction(text, self.labels[best], row[best], dict(zip(self.labels, row, strict=True))))
        return results
