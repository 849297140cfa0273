"""Few shapes: every batch that reaches the model, in training, evaluation and prediction, is padded to one of a
few fixed lengths (kernels, compiled code and CUDA graphs are then built once per length), and the padding it
adds changes no result beyond rounding."""

from __future__ import annotations

import lightning as L
import torch

from emotion_lightning import EmotionPredictor
from emotion_lightning.batches import padded_lengths
from emotion_lightning.cli import run
from emotion_lightning.packing import ROW_LENGTH
from tests.conftest import run_folder


class RecordShapes(L.Callback):
    """The sequence length of every batch the transformer is called with, by stage."""

    def __init__(self):
        self.lengths: dict[str, set[int]] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        def record(module, args, kwargs):
            stage_now = trainer.state.stage.value if trainer.state.stage else "other"
            input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            self.lengths.setdefault(stage_now, set()).add(input_ids.shape[1])

        # The encoder's embeddings: padded batches and packed rows all start there, whichever way the layers run.
        pl_module.model.base_model.embeddings.register_forward_pre_hook(record, with_kwargs=True)


def recorded(cli) -> dict[str, set[int]]:
    (recorder,) = [callback for callback in cli.trainer.callbacks if type(callback).__name__ == "RecordShapes"]
    return recorder.lengths


def test_only_the_padded_lengths_reach_the_model(fit_args, tmp_path):
    record = ["--trainer.callbacks+=tests.test_shapes.RecordShapes"]
    fitted = run(["fit", *fit_args, *record])
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{' '.join(['happy'] * n)}\n" for n in range(1, 70, 3)))  # 1 to 67 words
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    settings = ["--ckpt_path", best, "--data.predict_file", str(texts), "--data.eval_batch_size", "2"]
    predicted = run(["predict", *fit_args, *record, *settings])
    seen = {**recorded(fitted), **recorded(predicted)}
    assert {"train", "validate", "predict"} <= set(seen)
    for stage, lengths in seen.items():
        # Packed rows (predict on a CPU) hold several texts: their widths are the ladder's up to a row's length.
        allowed = set(padded_lengths(ROW_LENGTH if stage == "predict" else 64))
        if stage == "predict":  # on a CPU a batch of texts of one length runs unpadded: [CLS] n words [SEP], cut at 64
            allowed |= {min(n + 2, 64) for n in range(1, 70, 3)}
        assert lengths <= allowed, f"{stage}: lengths {sorted(lengths - allowed)} are not padded lengths"
    assert len(seen["predict"]) > 2  # texts of many lengths still make only a few shapes


def test_the_padding_changes_no_probability_beyond_rounding(tiny_checkpoint):
    predictor = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="32-true")
    texts = ["i am glad", "so very very sad and lonely today", "scared", "i feel angry about my exam"]
    batched = predictor.predict_probabilities(texts)  # padded to 8 or 16 tokens, with each other
    for text, row in zip(texts, batched, strict=True):
        ids = torch.tensor([predictor.tokenizer(text)["input_ids"]])  # alone, not padded at all
        with torch.no_grad():
            alone = predictor.model(ids, torch.ones_like(ids)).softmax(-1)[0]
        torch.testing.assert_close(row, alone, atol=1e-5, rtol=0)
