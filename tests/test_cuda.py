"""On a CUDA machine: the reference recipe trains in 16-mixed with its clipping, and prediction runs on the GPU.

Skipped where there is no GPU (CI has none); benchmarks/gpu.sh runs it on a GPU machine.
"""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

from emotion_lightning import EmotionPredictor
from emotion_lightning.cli import run
from tests.conftest import run_folder
from tests.test_configs import check_trained_with_clipping, fit_like_a_user
from tests.test_precision import train_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_reference_config_trains_in_16_mixed_with_clipping(tiny_distilbert, data_dir, tmp_path, monkeypatch):
    gpu = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    cli = fit_like_a_user("reference.yaml", tiny_distilbert, data_dir, tmp_path, monkeypatch, *gpu)
    check_trained_with_clipping(cli, tmp_path / "run")
    assert cli.trainer.precision == "16-mixed"
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert isinstance(cli.trainer.precision_plugin.scaler, torch.amp.GradScaler)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_clipping_bounds_the_unscaled_gradient_on_cuda(precision, tiny_distilbert, data_dir, tmp_path):
    clip = 1e-3
    model, _, recorder, _ = train_tiny(
        tiny_distilbert, data_dir, tmp_path, 6, clip, accelerator="gpu", devices=1, precision=precision
    )
    assert model.trainer.optimizers[0].defaults["fused"]
    applied = [norm for norm, skipped in zip(recorder.applied_norms, recorder.skipped, strict=True) if not skipped]
    assert len(applied) >= 3
    assert applied == pytest.approx([clip] * len(applied), rel=1e-3)


def test_fit_on_cuda_runs_16_mixed_and_predicts_there(fit_args, tmp_path):
    args = [*fit_args, "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "16-mixed"]
    cli = run(["fit", *args])
    assert cli.trainer.precision == "16-mixed"
    predictor = EmotionPredictor.from_checkpoint(run_folder(tmp_path) / "checkpoints" / "best.ckpt", device="cuda")
    assert predictor.device.type == "cuda"
    (result,) = predictor(["i feel glad"])
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-3


class CountSynchronisations(L.Callback):
    """How many times each training step waited for the GPU (PyTorch's sync debug mode, as warnings)."""

    def __init__(self):
        self.per_step: list[int] = []
        self._catching = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._catching = warnings.catch_warnings(record=True)
        self._caught = self._catching.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self.per_step.append(sum("synchroniz" in str(w.message) for w in self._caught))
        self._catching.__exit__(None, None, None)


def test_training_steps_do_not_wait_for_the_gpu(fit_args, tmp_path):
    # No logging step, validation or checkpoint inside the counted steps: those read back on purpose.
    args = [*fit_args, "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "16-mixed"]
    args += ["--trainer.gradient_clip_val", "1.0", "--trainer.log_every_n_steps", "1000", "--trainer.max_epochs", "1"]
    cli = run(["fit", *args, "--trainer.callbacks+=tests.test_cuda.CountSynchronisations"])
    (counter,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "CountSynchronisations"]
    print(f"synchronisations per training step: {counter.per_step}")
    assert counter.per_step[1:-1] and max(counter.per_step[1:-1]) == 0, counter.per_step


def test_serve_predicts_on_the_gpu(tiny_checkpoint):
    pytest.importorskip("uvicorn")
    from tests.test_serve import TEXTS, Server

    serving = Server(tiny_checkpoint, "--accelerator", "cuda")
    try:
        status, answer = serving.predict({"texts": TEXTS})
        assert serving.get("/info")[1].count(b'"device": "cuda') >= 1
    finally:
        serving.stop()
    assert status == 200
    expected = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cuda")(TEXTS)
    for got, prediction in zip(answer["predictions"], expected, strict=True):
        for label, probability in prediction.probabilities.items():
            assert got["probabilities"][label] == pytest.approx(probability, abs=2e-3)


@pytest.mark.parametrize("compile", [False, True])
def test_the_predictor_runs_an_fp16_copy_on_cuda_eager_and_compiled(compile, tiny_checkpoint):
    texts = ["i feel happy today", "i am so angry", "this is a sad day", "what a surprise that was"] * 8
    in_fp32 = EmotionPredictor.load(tiny_checkpoint, device="cuda", precision="32-true").predict_probabilities(texts)
    predictor = EmotionPredictor.load(tiny_checkpoint, device="cuda", compile=compile)
    predictor.warm_up()
    in_fp16 = predictor.predict_probabilities(texts)
    copy = predictor.model.inference_copy
    assert copy.dtype == torch.float16 and copy.compiled == compile
    assert (in_fp16.argmax(1) == in_fp32.argmax(1)).all()
    torch.testing.assert_close(in_fp16, in_fp32, atol=5e-2, rtol=0)
