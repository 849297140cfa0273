"""Exports load without this package and agree with the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotion_lightning import EmotionPredictor
from emotion_lightning.cli import main
from emotion_lightning.export import ONNX_FILE_NAME

TEXTS = ["i am glad", "so very very sad and lonely today", "scared", "i feel angry about my exam"]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    main(["export", str(tiny_checkpoint), str(folder), "--onnx", "true"])
    return folder


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    predictor = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="32-true")
    return predictor, predictor.predict_probabilities(TEXTS)


def test_pipeline_loads_the_folder_offline_and_agrees(exported, reference, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    predictor, probabilities = reference
    classifier = pipeline("text-classification", model=str(exported), top_k=None)
    for text, expected, outputs in zip(TEXTS, probabilities, classifier(TEXTS), strict=True):
        by_label = {output["label"]: output["score"] for output in outputs}
        assert set(by_label) == set(predictor.labels), text
        actual = torch.tensor([by_label[label] for label in predictor.labels])
        assert actual.argmax() == expected.argmax(), text
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_onnx_with_dynamic_batch_and_length_agrees(exported, reference):
    import onnxruntime

    predictor, probabilities = reference
    session = onnxruntime.InferenceSession(str(exported / ONNX_FILE_NAME), providers=["CPUExecutionProvider"])
    # One batch of all texts (padded), then texts one at a time: other batch sizes and lengths.
    encoded = predictor.tokenizer(TEXTS, padding=True, return_tensors="np")
    (logits,) = session.run(None, {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    together = torch.from_numpy(logits).softmax(-1)
    torch.testing.assert_close(together, probabilities, atol=1e-4, rtol=0)
    for text, expected in zip(TEXTS, probabilities, strict=True):
        single = predictor.tokenizer([text], return_tensors="np")
        (logits,) = session.run(None, {"input_ids": single["input_ids"], "attention_mask": single["attention_mask"]})
        actual = torch.from_numpy(logits[0]).softmax(-1)
        assert int(np.argmax(logits[0])) == int(expected.argmax())
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_export_of_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "out")])
    assert exit_info.value.code == f"emotion-lightning: error: checkpoint {tmp_path / 'nope.ckpt'} does not exist"
    assert not (tmp_path / "out").exists()


def test_predictor_loads_the_exported_folder_like_the_checkpoint(exported, reference):
    predictor, probabilities = reference
    from_folder = EmotionPredictor.from_pretrained(exported, device="cpu", precision="32-true")
    assert from_folder.labels == predictor.labels
    assert from_folder.max_length == predictor.max_length
    torch.testing.assert_close(from_folder.predict_probabilities(TEXTS), probabilities, atol=1e-6, rtol=0)


def test_onnx_without_the_extra_says_which_to_install_and_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real_find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_checkpoint), str(tmp_path / "out"), "--onnx", "true"])
    assert exit_info.value.code.startswith("emotion-lightning: error: --onnx needs the onnx package: pip install")
    assert list(tmp_path.iterdir()) == []


def test_export_never_writes_into_a_folder_that_holds_something(tiny_checkpoint, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_checkpoint), str(tmp_path)])
    assert "exists and is not an empty folder" in exit_info.value.code
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


def test_the_model_card_says_what_the_model_was_trained_on(exported, data_dir):
    card = (exported / "README.md").read_text()
    # The data module's record (its batch size and data), the model's (the precision), each from the checkpoint.
    assert f"| training data | local files ({data_dir.name}) |" in card
    assert "| batch size | 8 |" in card
    assert "| precision | 32-true |" in card
