"""Texts packed into rows predict what they predict alone: both backbones, fp32 and bf16, from Python and the CLI."""

from __future__ import annotations

import csv

import pytest
import torch

from emotion_lightning import EmotionClassifier, EmotionPredictor
from emotion_lightning.batches import padded_lengths
from emotion_lightning.packing import pack
from tests.conftest import fixture_rows

TEXTS = [text for text, _ in fixture_rows(6, seed=5)] + [" ".join(["happy"] * 80), "sad"]


def test_texts_are_laid_end_to_end_and_see_only_themselves():
    ids = [[2, 10, 3], [2, 11, 12, 13, 3], [2, 3], list(range(2, 300))]
    rows = pack(ids, index=[7, 8, 9, 10], pad_id=0, row_length=8)
    assert sorted(rows.index.tolist()) == [7, 8, 9, 10]
    assert rows.input_ids.shape[1] in padded_lengths(298)  # one of the few widths
    placed = zip(rows.starts.tolist(), rows.lengths.tolist(), rows.index.tolist(), strict=True)
    for (row, column), length, original in placed:
        assert rows.input_ids[row, column : column + length].tolist() == ids[original - 7]
        assert rows.position_ids[row, column : column + length].tolist() == list(range(length))
        mask = rows.attention_mask[row, 0]
        assert mask[column, column : column + length].all() and mask[column].sum() == length  # itself, only
    assert rows.attention_mask.shape[0] == 3  # the long text alone; 5 + 3 tokens in a row of 8; the 2 in another


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_distilbert"])
def test_packed_probabilities_are_the_padded_ones(backbone, precision, request):
    torch.manual_seed(0)
    model = EmotionClassifier(backbone=str(request.getfixturevalue(backbone)))
    packed = EmotionPredictor(model, precision=precision, pack=True, batch_size=5)
    padded = EmotionPredictor(model, precision=precision, pack=False, batch_size=5)
    assert packed.packs and not padded.packs
    with pytest.warns(UserWarning, match="were truncated"):
        first = packed.predict_probabilities(TEXTS)
    with pytest.warns(UserWarning, match="were truncated"):
        second = padded.predict_probabilities(TEXTS)
    # fp32: the same numbers but for summation order; bf16: its rounding (the unsure texts are redone in fp32).
    torch.testing.assert_close(first, second, atol=1e-5 if precision == "32-true" else 2e-2, rtol=0)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_distilbert"])
def test_the_texts_redone_in_fp32_get_their_own_probabilities(backbone, request, monkeypatch):
    # Only some texts of a packed batch are unsure: each of them must get back its own fp32 probabilities.
    from emotion_lightning import model as model_module

    torch.manual_seed(0)
    model = EmotionClassifier(backbone=str(request.getfixturevalue(backbone)))
    with torch.no_grad():  # a random head of the tiny backbone gives every text nearly the same probabilities
        model.model.classifier.weight.mul_(300)
    # Texts of 14 to 54 tokens (none truncated), several rows of them, so a row holds texts of unlike lengths.
    texts = [" ".join([text] * 4) for text, _ in fixture_rows(16, seed=5)[:48]]
    in_fp32 = EmotionPredictor(model, precision="32-true", pack=True).predict_probabilities(texts)
    bf16 = EmotionPredictor(model, precision="bf16-mixed", pack=True, batch_size=48)
    monkeypatch.setattr(model_module, "REDO_IN_FP32_WITHIN", 0.0)  # nothing redone: bf16's own margins
    first, second = bf16.predict_probabilities(texts).topk(2, dim=1).values.unbind(dim=1)
    threshold = (first - second).median().item()
    redone = first - second < threshold  # the texts the model redoes at that threshold
    monkeypatch.setattr(model_module, "REDO_IN_FP32_WITHIN", threshold)
    in_bf16 = bf16.predict_probabilities(texts)
    assert 0 < redone.sum() < len(texts)
    torch.testing.assert_close(in_bf16[redone], in_fp32[redone], atol=1e-5, rtol=0)


def test_the_predict_command_packs_and_writes_what_padded_batches_give(tiny_checkpoint, fit_args, tmp_path):
    from emotion_lightning.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{text}\n" for text in TEXTS[:8]))
    outputs = {}
    for packs in ("true", "false"):
        output = tmp_path / f"packed-{packs}.csv"
        main(
            [
                "predict",
                *fit_args,
                "--ckpt_path",
                str(tiny_checkpoint),
                "--data.predict_file",
                str(texts),
                "--data.pack_predictions",
                packs,
                "--trainer.precision",
                "32-true",
                "--prediction_writer.output_file",
                str(output),
            ]
        )
        with output.open(newline="") as file:
            outputs[packs] = list(csv.DictReader(file))
    for packed, padded in zip(outputs["true"], outputs["false"], strict=True):
        assert packed["text"] == padded["text"] and packed["label"] == padded["label"]
        assert float(packed["score"]) == pytest.approx(float(padded["score"]), abs=1e-5)
