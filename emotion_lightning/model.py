"""EmotionClassifier: a transformer sequence classifier with metrics, optimizer and schedule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import GradClipAlgorithmType
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import get_linear_schedule_with_warmup

from emotion_lightning.backbone import (
    build_classifier,
    config_for_checkpoint,
    load_tokenizer,
    tokenizer_from_files,
    tokenizer_to_files,
    usable_max_length,
)
from emotion_lightning.checkpoints import SCORE_CHECKPOINT_KEY, TOKENIZER_CHECKPOINT_KEY, model_settings
from emotion_lightning.console import set_up_messages
from emotion_lightning.data import LABELS
from emotion_lightning.errors import SettingError, check_at_least
from emotion_lightning.first_token import classifier_logits
from emotion_lightning.inference import ReducedPrecisionCopy, batch_device, check_switch_setting, runs_int8

# A prediction made in bf16 / fp16 / int8 whose two most likely labels are closer than this is redone in fp32 (see
# probabilities): bf16 moved a probability by at most 0.050 (2,000 validation texts, MiniLM), so a label can change
# only where the first two are within twice that. Int8 moved one by up to 0.14, but every label it changed had its
# first two within 0.1, and after the redo all 2,000 labels were fp32's (tests/test_real_data.py checks 99.5%).
REDO_IN_FP32_WITHIN = 0.1


def unsure_rows(probabilities: torch.Tensor) -> torch.Tensor:
    """Which rows of reduced-precision probabilities are redone in fp32: their top two within REDO_IN_FP32_WITHIN."""
    first, second = probabilities.topk(2, dim=-1).values.unbind(dim=-1)
    return first - second < REDO_IN_FP32_WITHIN


class WeightedMean(MeanMetric):
    """A weighted mean without torchmetrics' NaN check, which reads the value back from the device at every update
    (and whose ``nan_strategy="disable"`` drops the weights). The loss guard watches for NaN instead."""

    def update(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        self.mean_value += (value * weight).sum()
        self.weight += weight.sum()


class EmotionClassifier(L.LightningModule):
    """Fine-tunes a transformer (default DistilBERT) to classify texts into ``labels``.

    Args:
        backbone: hub id or local folder of a pretrained model.
        labels: label names in id order.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay, not applied to biases and LayerNorm weights.
        warmup_ratio: share of the optimizer steps spent warming the learning rate up from 0;
            afterwards it decays linearly to 0.
        max_length: longest text in tokens; longer ones are truncated. Saved with the model, so that
            every way of using it (fit, validate, test, predict, ``EmotionPredictor``, export) encodes
            texts as training did. Cut to what the backbone takes.
        label_smoothing: share of the training target spread over the other labels (the training loss only).
        freeze_word_embeddings: keep the word embeddings (half of DistilBERT's or MiniLM's weights) as
            pretrained. Faster steps; changes the recipe, so it is off in configs/reference.yaml.
        compile: torch.compile for training and prediction: true, auto or false. With ``true`` it compiles the
            transformer for training (dynamic shapes; faster steps once compiled, after a compilation at the start)
            and the bf16 / fp16 copy of the weights that prediction runs; ``auto`` compiles that copy only where it
            was measured faster (:mod:`emotion_lightning.inference`), training not; ``false`` neither. For
            validate, test and predict the command line's setting counts, not the checkpoint's.
        int8: int8 linear layers for prediction on a CPU: true, auto or false. In place of the bf16 copy, the
            transformer's linear layers run in int8 (weights per output channel, inputs per token) and the rest in
            fp32; ``auto`` does so on the CPUs where it was measured faster (:mod:`emotion_lightning.inference`).
            Labels stay fp32's through the same fp32 redo of unsure texts. For validate, test and predict the
            command line's setting counts.
        backbone_config: the backbone's architecture. Filled in from the pretrained model and
            saved in every checkpoint, so a checkpoint rebuilds the model without any download.
    """

    def __init__(
        self,
        backbone: str = "distilbert-base-uncased",
        labels: Sequence[str] = LABELS,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        max_length: int = 512,
        label_smoothing: float = 0.0,
        freeze_word_embeddings: bool = False,
        compile: bool | Literal["auto"] = "auto",
        int8: bool | Literal["auto"] = "auto",
        backbone_config: dict | None = None,
    ):
        set_up_messages(show=False)  # trained from Python too: as quiet as the command line
        super().__init__()
        if not learning_rate > 0:
            raise SettingError(f"model.learning_rate must be more than 0, got {learning_rate}")
        if not 0 <= warmup_ratio < 1:
            raise SettingError(f"model.warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if not 0 <= label_smoothing < 1:
            raise SettingError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        names = [str(label).strip().lower() for label in labels]
        if len(names) < 2 or len(set(names)) < len(names) or not all(names):
            raise SettingError(
                f"model.labels must be two or more different, non-empty names (case does not count), got {list(labels)}"
            )
        check_at_least("model.max_length", max_length, 2, "room for the [CLS] and [SEP] tokens")
        self.save_hyperparameters()
        self.labels = tuple(labels)
        # from_pretrained returns the model in eval mode, which would train without dropout.
        self.model = build_classifier(backbone, self.labels, backbone_config).train()
        self.hparams.backbone_config = config_for_checkpoint(self.model)
        if freeze_word_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        self._tokenizer = None
        self._tokenizer_files = None  # the checkpoint's, once restored from them
        self._max_length: int | None = None
        # Prediction under autocast runs a copy of the weights in its dtype (emotion_lightning.inference); whether
        # that copy is compiled, and whether its linear layers are int8: auto, True or False (EmotionPredictor's and
        # predict's `compile` and `int8`).
        self.inference_compile = check_switch_setting(compile, "model.compile")
        self.inference_int8 = check_switch_setting(int8, "model.int8")
        self._inference_copy: ReducedPrecisionCopy | None = None

        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(len(self.labels), average="micro", validate_args=False),
                "f1_macro": MulticlassF1Score(len(self.labels), average="macro", validate_args=False),
            }
        )
        # validate_args=False: the checks ask the device for an answer at every step.
        train_accuracy = MulticlassAccuracy(len(self.labels), average="micro", validate_args=False)
        self.train_metrics = MetricCollection({"acc": train_accuracy}).clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Keyed by log name ("train" cannot be a ModuleDict key: it is a Module method).
        self.mean_losses = torch.nn.ModuleDict({f"{stage}_loss": WeightedMean() for stage in ("train", "val", "test")})

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> EmotionClassifier:
        """The model a checkpoint (as :func:`~emotion_lightning.checkpoints.read_checkpoint` returns it) holds."""
        model = cls(**model_settings(checkpoint))
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
        return model

    def configure_model(self) -> None:
        if self.hparams.compile is True:
            # In place, so that the weights keep their names in checkpoints.
            self.model.compile(dynamic=True)

    # -- tokenizer travels with the checkpoint ------------------------------------------------

    @property
    def tokenizer(self):
        """The backbone's tokenizer: from the checkpoint when restored, else from ``backbone``."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.hparams.backbone)
        return self._tokenizer

    @property
    def max_length(self) -> int:
        """The longest text in tokens this model encodes: ``max_length``, cut to what the backbone takes."""
        if self._max_length is None:
            positions = getattr(self.model.config, "max_position_embeddings", None)
            self._max_length = usable_max_length(
                self.hparams.max_length, self.tokenizer, positions, self.hparams.backbone
            )
            # Checkpoints record the length used, so that a model is never cut again with a warning.
            self.hparams.max_length = self._max_length
        return self._max_length

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TOKENIZER_CHECKPOINT_KEY] = tokenizer_to_files(self.tokenizer)
        if (score := self.trainer.callback_metrics.get("val/acc")) is not None:  # what these weights scored
            checkpoint[SCORE_CHECKPOINT_KEY] = float(score)
        # How it was trained, for the model card that export writes (the data module records its own part).
        checkpoint["training"] = {"precision": str(self.trainer.precision)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        files = checkpoint.get(TOKENIZER_CHECKPOINT_KEY)
        if files is not None and files is not self._tokenizer_files:  # the same checkpoint: restored already
            self._tokenizer, self._tokenizer_files, self._max_length = tokenizer_from_files(files), files, None

    # -- steps ---------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The last layer for the [CLS] tokens alone where the head reads nothing else: the same logits and gradients
        # for 10/12 fewer of that layer's products. The compiled model (compile true) runs whole, as compiled.
        if self.hparams.compile is True:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return classifier_logits(self.model, input_ids, attention_mask)

    def _shared_step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of a batch; logs the stage's loss and metrics (stage: train, val or test)."""
        logits = self._logits(batch)
        # The loss in fp32 even under mixed precision: log-softmax is where low precision hurts.
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=smoothing)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        if len(logits):  # an empty batch (a process with no text of its own) adds nothing, but logs: the sync needs it
            metrics.update(logits.detach(), batch["labels"])
        if stage == "train":
            # Not a progress-bar metric: those are read back from the device at every step.
            self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(logits))
        # Epoch means as torchmetrics, which sum losses and counts over all processes under DDP.
        # (Lightning's own `sync_dist` mean divides an integer count by the number of processes, so
        # unevenly split data, 19 texts as 10 + 9, came out 19/18 too high.)
        mean_loss = self.mean_losses[f"{stage}_loss"]
        if len(logits):  # (an empty batch's loss is NaN, a mean of nothing)
            mean_loss.update(loss.detach(), weight=torch.full_like(loss.detach(), len(logits)))
        # The epoch's mean training loss is train/loss_epoch, for per-epoch tables next to val/loss.
        self.log("train/loss_epoch" if stage == "train" else f"{stage}/loss", mean_loss, on_step=False, on_epoch=True)
        for name, metric in metrics.items():  # in the progress bar only val/acc, beside the loss: more would wrap
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name == "val/acc", batch_size=len(logits))
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch, "train")
        # Logged by the model itself, so that it works with any logger setting (Lightning's
        # LearningRateMonitor stops a run that has no logger).
        # Made on the device (a Python number would be copied there, and a copy waits for the device).
        learning_rate = torch.full((), self.trainer.optimizers[0].param_groups[0]["lr"], device=loss.device)
        self.log("train/lr", learning_rate, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        # Probabilities go to callbacks (reports: confusion matrix, per-class scores, mistakes).
        _, logits = self._shared_step(batch, "val")
        return {"probabilities": logits.detach().float().softmax(dim=-1)}

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        _, logits = self._shared_step(batch, "test")
        return {"probabilities": logits.detach().float().softmax(dim=-1)}

    def predict_step(self, batch: dict, batch_idx: int = 0) -> dict:
        """Label ids, label names and class probabilities for each text, with its input index."""
        probabilities = self.probabilities(batch)
        label_ids = probabilities.argmax(dim=-1)
        return {
            "index": batch["index"].cpu(),
            "label_ids": label_ids.cpu(),
            "labels": [self.labels[i] for i in label_ids.tolist()],
            "probabilities": probabilities.cpu(),
        }

    def probabilities(self, batch: dict, redo_unsure: bool = True) -> torch.Tensor:
        """Class probabilities (fp32) of a padded batch (``input_ids``, ``attention_mask``) or a packed one
        (``packed``), in the precision that runs. Under bf16 or fp16 autocast a copy of the weights in that dtype
        predicts (:mod:`emotion_lightning.inference`), and the texts whose two most likely labels are within
        ``REDO_IN_FP32_WITHIN`` of each other are predicted again in fp32, the same way: their label is fp32's.

        Reduced precision moves a probability by 0.001 on average and by up to 0.050 (2,000 validation texts,
        MiniLM, bf16; int8: up to 0.14); without the redo 3 of those 2,000 labels differed from fp32's (int8: 5),
        each where the first two labels were within 0.1. ``redo_unsure=False`` leaves the redo to the caller
        (:func:`unsure_rows`), which can gather a whole call's unsure texts into one fp32 pass.
        """
        on = batch_device(batch)
        device = on.type
        texts = len(batch["packed"].index) if "packed" in batch else len(batch["input_ids"])
        reduced = torch.is_autocast_enabled(device) and texts > 0
        if reduced:  # a copy of the weights in the autocast dtype, made once, rather than a cast of each at every call
            probabilities = self._reduced_precision_copy(torch.get_autocast_dtype(device), on).logits(batch)
        else:
            probabilities = self._logits(batch)
        probabilities = probabilities.float().softmax(dim=-1)
        if reduced and redo_unsure and (unsure := unsure_rows(probabilities)).any():
            if "packed" in batch:
                again = {"packed": batch["packed"].subset(unsure)}
            else:
                again = {"input_ids": batch["input_ids"][unsure], "attention_mask": batch["attention_mask"][unsure]}
            with torch.autocast(device, enabled=False):
                probabilities[unsure] = self._logits(again).float().softmax(dim=-1)
        return probabilities

    @property
    def inference_copy(self) -> ReducedPrecisionCopy | None:
        """The reduced-precision copy of the weights that prediction last ran (None before any, or in fp32)."""
        return self._inference_copy

    def _reduced_precision_copy(self, dtype: torch.dtype, device: torch.device) -> ReducedPrecisionCopy:
        """The model's weights in ``dtype`` (or int8) for prediction, made again when they have changed since."""
        settings = (dtype, self.inference_compile, runs_int8(self.inference_int8, device, "model.int8"))
        if self._inference_copy is None or not self._inference_copy.matches(self.model, *settings):
            self._inference_copy = ReducedPrecisionCopy(self.model, *settings)
        return self._inference_copy

    def _logits(self, batch: dict) -> torch.Tensor:
        if "packed" not in batch and not len(batch["input_ids"]):
            # A process of a distributed run with no text of its own runs one empty batch, to take part in the
            # metrics' synchronisation: no text, no forward pass (the encoder cannot take a batch of none).
            return torch.zeros((0, len(self.labels)), device=self.device)
        if "packed" in batch:
            return classifier_logits(self.model, *batch["packed"].model_inputs())
        return self(batch["input_ids"], batch["attention_mask"])

    # -- optimisation --------------------------------------------------------------------------

    def configure_optimizers(self):
        # Biases and LayerNorm weights are the 1-D parameters; decaying them only hurts.
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.learning_rate,
            # One fused kernel instead of a loop over ~100 tensors: a large share of a CPU step.
            fused=self.device.type in ("cpu", "cuda"),
        )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        # The Hugging Face Trainer's default schedule, so that the reference recipe means the same.
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(self.hparams.warmup_ratio * total_steps), total_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip as ``trainer.gradient_clip_val`` says, in every precision, with the fused AdamW too.

        Lightning's mixed-precision plugins refuse to clip for an optimizer that unscales fp16 gradients inside its
        own step (fused AdamW), for bf16 as well, where nothing is scaled. Here the gradients are unscaled first
        (16-mixed; the GradScaler then knows, and its step divides nothing more), then clipped by torch.
        """
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == GradClipAlgorithmType.VALUE:
            torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val, foreach=True)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val, foreach=True)
