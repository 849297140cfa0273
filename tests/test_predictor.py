"""EmotionPredictor: the Python API for classifying texts, and what it does with bad input."""

from __future__ import annotations

import pytest
import torch

from emotion_lightning import LABELS, EmotionPredictor, Prediction


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> EmotionPredictor:
    return EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=2, precision="32-true")


def test_results_in_input_order_match_one_by_one(predictor):
    texts = ["i am glad", "so very very sad and lonely today", "scared", "i feel angry about my exam"]
    together = predictor(texts)
    assert [result.text for result in together] == texts
    for text, result in zip(texts, together, strict=True):
        (alone,) = predictor([text])
        assert alone.label == result.label
        assert alone.score == pytest.approx(result.score, abs=1e-5)
    for result in together:
        assert isinstance(result, Prediction)
        assert list(result.probabilities) == list(LABELS)
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert result.score == max(result.probabilities.values())
        assert result.probabilities[result.label] == result.score


def test_matches_the_lightning_module(predictor):
    texts = ["i am glad", "so sad"]
    encoded = predictor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = predictor.model(encoded["input_ids"], encoded["attention_mask"]).softmax(-1)
    torch.testing.assert_close(predictor.predict_probabilities(texts), expected, atol=1e-5, rtol=1e-4)


def test_long_texts_are_truncated_and_marked(predictor):
    long_text = " ".join(["happy"] * 500)  # the tiny model has 64 positions
    with pytest.warns(UserWarning, match="1 of 2 texts were longer than 64 tokens and were truncated"):
        long, short = predictor([long_text, "short"])
    assert long.truncated and not short.truncated
    assert long.label in LABELS


def test_calls_from_several_threads_get_their_own_results(predictor, capfd):
    from concurrent.futures import ThreadPoolExecutor

    long_text = " ".join(["sad"] * 500)
    inputs = [[long_text] * (i % 3 + 1) + ["glad"] * (i % 2) for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(predictor, inputs))
    for texts, results in zip(inputs, outputs, strict=True):
        assert [result.text for result in results] == texts
        assert [result.truncated for result in results] == [text == long_text for text in texts]
    # Nothing is switched for the whole process by one call (progress bars were, and showed in the others).
    assert "Tokenizing" not in capfd.readouterr().err


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["fine", ""], ValueError, r"empty or only whitespace, at positions \[1\]"),
        (["fine", "  \t "], ValueError, r"positions \[1\]"),
        (["fine", None, 3], TypeError, r"2 are not: \[1\] NoneType, \[2\] int"),
        ("one string", TypeError, "not one string"),
    ],
)
def test_bad_texts_get_a_clear_error(predictor, texts, error, message):
    with pytest.raises(error, match=message):
        predictor(texts)


def test_no_texts_give_no_results(predictor):
    assert predictor([]) == []
