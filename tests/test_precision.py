"""Mixed precision: the precision chosen per machine, and gradient clipping that is right in every precision.

16-mixed needs CUDA for speed, not for correctness: the fp16 GradScaler path is driven here on the CPU
through Lightning's own MixedPrecision plugin (fp16 autocast and ``torch.amp.GradScaler("cpu")``).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from emotion_lightning import EmotionClassifier, EmotionDataModule


def fp16_mixed_on_cpu(init_scale: float = 2.0**16) -> MixedPrecision:
    """Lightning's 16-mixed plugin with a CPU GradScaler (the Trainer only builds it for CUDA)."""
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))


def precision_settings(name: str, **scaler) -> dict:
    return {"plugins": [fp16_mixed_on_cpu(**scaler)]} if name == "16-mixed" else {"precision": name}


class StepRecorder(L.Callback):
    """Records the gradient norm each optimizer step applies, and whether the step was skipped.

    The fused AdamW writes the gradients it applied back into ``.grad`` (divided by the ``grad_scale``
    it was given), so their norm after the step is the applied norm. Under 16-mixed the GradScaler
    tells the step whether an inf or NaN was found (``found_inf``) just before it.
    """

    def __init__(self):
        self.applied_norms: list[float] = []
        self.skipped: list[bool] = []

    def on_train_start(self, trainer, pl_module):
        trainer.optimizers[0].register_step_pre_hook(self._before_step)
        trainer.optimizers[0].register_step_post_hook(self._after_step)

    def _before_step(self, optimizer, args, kwargs):
        found_inf = getattr(optimizer, "found_inf", None)
        self.skipped.append(bool(found_inf is not None and found_inf.item() > 0))

    def _after_step(self, optimizer, args, kwargs):
        gradients = [p.grad.float() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.applied_norms.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients])))
        )


def train_tiny(backbone, data_dir, tmp_path, steps: int, clip: float, accelerator: str = "cpu", **trainer_settings):
    L.seed_everything(0)
    model = EmotionClassifier(backbone=str(backbone), learning_rate=1e-3)
    data = EmotionDataModule(data_dir=str(data_dir), batch_size=8)
    recorder = StepRecorder()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator=accelerator,
        gradient_clip_val=clip,
        callbacks=[recorder],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **trainer_settings,
    )
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.fit(model, data)
    return model, trainer, recorder, initial


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_clipping_bounds_the_unscaled_gradient_with_the_fused_optimizer(precision, tiny_distilbert, data_dir, tmp_path):
    # A bound far below the tiny model's gradient norm: every step is clipped.
    clip = 1e-3
    model, _, recorder, _ = train_tiny(tiny_distilbert, data_dir, tmp_path, 4, clip, **precision_settings(precision))
    assert model.trainer.optimizers[0].defaults["fused"], "the optimizer under test is the fused AdamW"
    applied = [norm for norm, skipped in zip(recorder.applied_norms, recorder.skipped, strict=True) if not skipped]
    assert len(applied) >= 3
    # Clipping the still-scaled fp16 gradients (the classic AMP bug) would apply clip / 65536 here;
    # not clipping at all would apply the full norm.
    assert applied == pytest.approx([clip] * len(applied), rel=1e-3)


def test_16_mixed_skips_steps_whose_gradients_overflow(tiny_distilbert, data_dir, tmp_path):
    # A loss scale so large that fp16 gradients overflow to inf: the GradScaler must skip those
    # steps (weights untouched) and halve the scale each time, clipping on or not.
    model, trainer, recorder, initial = train_tiny(
        tiny_distilbert, data_dir, tmp_path, 3, 1.0, **precision_settings("16-mixed", init_scale=2.0**60)
    )
    assert recorder.skipped == [True, True, True]
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.detach(), initial[name]), name
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**57
