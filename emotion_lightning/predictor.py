"""Classify texts from Python with a trained model: two lines, no Trainer needed.

predictor = EmotionPredictor.from_checkpoint("runs/offline/version_0/checkpoints/best.ckpt")
predictor(["I passed my exam!", "I am furious about this."])
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric.plugins.precision import MixedPrecision

from emotion_lightning.backbone import load_tokenizer
from emotion_lightning.batches import PadBatch
from emotion_lightning.checkpoints import read_checkpoint
from emotion_lightning.errors import EmotionLightningError, check_at_least
from emotion_lightning.inference import check_switch_setting, runs_int8
from emotion_lightning.model import EmotionClassifier, unsure_rows
from emotion_lightning.packing import PackWherePaddingWastes, like_length_batches, prediction_collate, should_pack
from emotion_lightning.precision import PREDICTION_PRECISIONS, inference_precision
from emotion_lightning.sources import check_texts
from emotion_lightning.tokenization import Encoder

# A folder holds a tokenizer if it has one of these.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


class ExportedModelError(EmotionLightningError, ValueError):
    """A folder given to ``from_pretrained`` that is not a trained emotion classifier with its tokenizer."""


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


class EmotionPredictor:
    """Batched prediction with a trained :class:`EmotionClassifier`.

    Texts are encoded exactly as ``emotion-lightning predict`` encodes them (the model's tokenizer and
    ``max_length``, the same padded lengths): sorted by length and batched so that each batch pads little;
    the results come back in input order. Texts longer than ``max_length`` tokens are truncated
    (``Prediction.truncated``; a warning gives the count). Calls from several threads are safe.

    Args:
        model: the trained model.
        batch_size: texts per forward pass.
        precision: ``auto`` (fp16 on CUDA, bf16 on a CPU that computes it natively, else fp32),
            ``32-true``, ``bf16-mixed`` or ``16-mixed``.
        pack: pack the texts of a call into rows (:mod:`emotion_lightning.packing`); default on a CPU.
        compile: ``torch.compile`` the reduced-precision copy of the weights that bf16 and fp16 predict with:
            ``auto`` (in the background, where that was measured faster), ``true`` (at the first call) or
            ``false`` (:mod:`emotion_lightning.inference`).
        int8: on a CPU, the transformer's linear layers in int8 and the rest in fp32, in place of the bf16 copy:
            ``auto`` (where that was measured faster), ``true`` or ``false`` (:mod:`emotion_lightning.int8`).

    Texts whose two most likely labels come out close in reduced precision are predicted again in fp32, all of a
    call's together, so that their labels are fp32's.
    """

    def __init__(
        self,
        model: EmotionClassifier,
        batch_size: int = 64,
        precision="auto",
        pack: bool | None = None,
        compile="auto",
        int8="auto",
    ):
        if precision not in PREDICTION_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PREDICTION_PRECISIONS)}, got {precision!r}")
        check_at_least("batch_size", batch_size, 1)
        self.compile = check_switch_setting(compile, "compile")
        self.int8 = check_switch_setting(int8, "int8")
        self.pack = pack
        self.model = model.eval()
        runs_int8(self.int8, self.device, "int8")  # int8 true on a GPU: refused now, by this setting's name
        self.tokenizer = model.tokenizer
        self.labels = model.labels
        self.batch_size = batch_size
        # The model's: what it was trained with, cut to what its backbone takes.
        self.max_length = model.max_length
        self.precision = precision

    @classmethod
    def from_checkpoint(
        cls, checkpoint_path: str | Path, device: str | torch.device | None = None, **settings
    ) -> EmotionPredictor:
        """Load a checkpoint written by ``fit`` (offline: it holds the architecture, tokenizer and max_length).

        ``device`` defaults to CUDA when available, else CPU.
        """
        model = EmotionClassifier.from_checkpoint(read_checkpoint(checkpoint_path))
        return cls(model.to(_device(device)), **settings)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None, **settings):
        """Load a model folder as ``emotion-lightning export`` writes it (weights, config with labels, tokenizer).

        The folder must hold a trained text classifier and its tokenizer: a bare encoder (no trained
        classification head) or a folder without tokenizer files is refused, not guessed at.
        """
        from transformers import AutoConfig

        folder = Path(folder)
        config = AutoConfig.from_pretrained(folder)
        if not any(name.endswith("ForSequenceClassification") for name in config.architectures or []):
            raise ExportedModelError(
                f"{folder} holds a {', '.join(config.architectures or ['model'])}, not a trained text classifier "
                "(no classification head): give a folder that `emotion-lightning export` wrote"
            )
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ExportedModelError(
                f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): give a folder that "
                "`emotion-lightning export` wrote"
            )
        labels = [config.id2label[i] for i in range(len(config.id2label))]
        tokenizer = load_tokenizer(str(folder))
        # export saves the trained max_length as the tokenizer's model_max_length.
        model = EmotionClassifier(backbone=str(folder), labels=labels, max_length=tokenizer.model_max_length)
        return cls(model.to(_device(device)), **settings)

    @classmethod
    def load(cls, model: str | Path, device: str | torch.device | None = None, **settings) -> EmotionPredictor:
        """A checkpoint file (``from_checkpoint``) or an exported folder (``from_pretrained``)."""
        if Path(model).is_dir():
            return cls.from_pretrained(model, device, **settings)
        return cls.from_checkpoint(model, device, **settings)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def packs(self) -> bool:
        """Whether calls are packed into rows: ``pack``, else where it was measured faster (a CPU) and the model's
        head allows it (BERT, DistilBERT)."""
        return should_pack(self.model.model, self.device, self.pack)

    def _autocast(self):
        precision = inference_precision(self.device) if self.precision == "auto" else self.precision
        if precision == "32-true":
            return contextlib.nullcontext()
        return MixedPrecision(precision, self.device.type).forward_context()

    @property
    def compiled(self) -> bool:
        """Whether calls run compiled code now (see ``compile``)."""
        copy = self.model.inference_copy
        return copy is not None and copy.compiled

    @property
    def runs_int8(self) -> bool:
        """Whether calls run int8 linear layers now (see ``int8``)."""
        copy = self.model.inference_copy
        return copy is not None and copy.int8

    def warm_up(self) -> None:
        """Build the fast path now rather than at the first call: the reduced-precision copy of the weights, and its
        compiled code where ``compile`` asks for it (waiting for a compilation in the background too)."""
        self._predict(["warm up"] * 2)
        if (copy := self.model.inference_copy) is not None:
            copy.wait_until_compiled()

    def predict_probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities, one row per text in input order (shape: texts x labels)."""
        return self._predict(check_texts(texts))[0]

    @torch.inference_mode()
    def _predict(self, texts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """Probabilities and whether each text was truncated, in input order."""
        if not texts:
            return torch.empty(0, len(self.labels)), []
        # The copy the model keeps follows the settings of the predictor that calls it (several may share a model).
        self.model.inference_compile, self.model.inference_int8 = self.compile, self.int8
        # Encoded as predict encodes a file (the model's tokenizer and max_length), in this call alone: no data
        # module, no dataset, nothing shared with another thread's call.
        encoded = Encoder(self.tokenizer, self.max_length)({"text": texts})
        if cut := sum(encoded["truncated"]):
            message = f"{cut} of {len(texts)} texts were longer than {self.max_length} tokens and were truncated"
            warnings.warn(message, stacklevel=2)
        pad_batch = PadBatch(self.tokenizer, self.max_length)
        collate = prediction_collate(pad_batch, self.tokenizer.pad_token_id, self.model.model, self.device, self.pack)
        probabilities = torch.empty(len(texts), len(self.labels))

        def predict(indices: list[int]) -> None:
            """Into ``probabilities``: those of the texts at ``indices``, batched by length."""
            order = sorted(indices, key=lambda i: encoded["length"][i], reverse=True)
            if isinstance(collate, PackWherePaddingWastes):  # (a GPU keeps its few padded shapes)
                batches = like_length_batches(order, encoded["length"], self.batch_size)
            else:
                batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
            for batch_indices in batches:
                batch = collate({"input_ids": [encoded["input_ids"][i] for i in batch_indices], "index": batch_indices})
                on_device = {name: value.to(self.device) for name, value in batch.items()}
                # (the unsure texts are redone below, all together)
                probabilities[batch["index"]] = self.model.probabilities(on_device, redo_unsure=False).cpu()

        autocast = self._autocast()
        with autocast:
            predict(list(range(len(texts))))
        if not isinstance(autocast, contextlib.nullcontext):
            # One fp32 pass for the whole call's unsure texts: a pass per batch read the fp32 weights from memory
            # each time for a few texts (int8: 549 texts/s against 498 per batch; bf16: 441 against 401).
            predict(unsure_rows(probabilities).nonzero().flatten().tolist())
        return probabilities, encoded["truncated"]

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
