"""The last layer run for the [CLS] tokens alone gives the model's own logits and gradients: both backbones, padded
texts with and without padding, packed rows."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from emotion_lightning.first_token import first_token_logits
from emotion_lightning.packing import pack


def classifier(folder):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=6, attn_implementation="sdpa")


def texts_and_mask(model) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, model.config.vocab_size, (4, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = attention_mask[3, 3:] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_distilbert"])
def test_the_logits_are_the_models_own(backbone, request):
    model = classifier(request.getfixturevalue(backbone)).eval()
    input_ids, attention_mask = texts_and_mask(model)
    with torch.no_grad():
        whole = model(input_ids=input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(first_token_logits(model, input_ids, attention_mask), whole, atol=1e-6, rtol=0)
        unmasked = torch.ones_like(input_ids)  # nothing masked: the mask is left out, another kernel runs
        expected = model(input_ids=input_ids, attention_mask=unmasked).logits
        torch.testing.assert_close(first_token_logits(model, input_ids, unmasked), expected, atol=1e-6, rtol=0)
        # Packed: several texts to a row, each its own logits, in input order.
        texts = [ids[: int(length)].tolist() for ids, length in zip(input_ids, attention_mask.sum(1), strict=True)]
        rows = pack(texts, list(range(len(texts))), pad_id=0, row_length=16)
        assert len(rows.input_ids) < len(texts)
        torch.testing.assert_close(first_token_logits(model, *rows.model_inputs()), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_distilbert"])
def test_training_gets_the_same_gradients(backbone, request):
    model = classifier(request.getfixturevalue(backbone)).eval()  # (no dropout: the same computation both ways)
    input_ids, attention_mask = texts_and_mask(model)
    labels = torch.tensor([0, 1, 2, 3])
    gradients = []
    for logits in (
        lambda: model(input_ids=input_ids, attention_mask=attention_mask).logits,
        lambda: first_token_logits(model, input_ids, attention_mask),
    ):
        model.zero_grad()
        torch.nn.functional.cross_entropy(logits(), labels).backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    whole, first_token = gradients
    assert whole.keys() == first_token.keys()
    for name in whole:
        torch.testing.assert_close(first_token[name], whole[name], atol=1e-6, rtol=0, msg=name)
