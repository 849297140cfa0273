"""EmotionClassifier: steps, optimizer groups, and checkpoints that restore offline."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch

from emotion_lightning import EmotionClassifier, EmotionDataModule
from emotion_lightning.backbone import BackboneNotFoundError
from emotion_lightning.data import LABELS


@pytest.fixture
def trained(tiny_bert, data_dir, tmp_path):
    """A tiny BERT fitted for a few steps from a backbone folder that is deleted afterwards."""
    backbone = tmp_path / "backbone-gone-after-training"
    shutil.copytree(tiny_bert, backbone)
    model = EmotionClassifier(backbone=str(backbone))
    datamodule = EmotionDataModule(data_dir=str(data_dir), batch_size=8)
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule)
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    shutil.rmtree(backbone)
    return model, trainer, checkpoint


def test_checkpoint_alone_rebuilds_model_and_tokenizer_offline(trained, monkeypatch):
    model, _, checkpoint = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    restored = EmotionClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    assert restored.labels == LABELS
    assert restored.model.config.id2label == dict(enumerate(LABELS))
    encoded = restored.tokenizer(["i feel so happy today"], return_tensors="pt")
    assert encoded["input_ids"][0].tolist()[1:-1] == [
        restored.tokenizer.vocab[w] for w in ["i", "feel", "so", "happy", "today"]
    ]
    model.eval(), restored.eval()
    with torch.no_grad():
        expected = model(encoded["input_ids"], encoded["attention_mask"])
        actual = restored(encoded["input_ids"], encoded["attention_mask"])
    torch.testing.assert_close(actual, expected)


def test_backbone_that_cannot_be_found_says_how_to_run_offline(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="HF_HUB_OFFLINE=1") as error:
        EmotionClassifier(backbone=str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(error.value)


def test_no_weight_decay_on_biases_and_layernorm(trained):
    model, trainer, _ = trained
    decay, no_decay = trainer.optimizers[0].param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_learning_rate_decays_linearly_to_zero(trained):
    _, trainer, _ = trained
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step"
    # 3 of 3 steps done (max_steps=3): the linear schedule has reached 0.
    assert scheduler.scheduler.get_last_lr()[0] == pytest.approx(0.0)


def test_predict_step_gives_ids_names_and_probabilities(trained):
    model, _, _ = trained
    batch = {
        "input_ids": torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "index": torch.tensor([5, 4]),
    }
    model.eval()
    with torch.no_grad():
        output = model.predict_step(batch, 0)
    assert output["index"].tolist() == [5, 4]
    assert output["probabilities"].shape == (2, len(LABELS))
    torch.testing.assert_close(output["probabilities"].sum(dim=1), torch.ones(2))
    assert output["labels"] == [LABELS[i] for i in output["label_ids"].tolist()]


def test_weights_saved_in_half_precision_train_in_fp32(tiny_distilbert, tmp_path):
    # Many Hub models are saved in fp16 or bf16; mixed precision needs fp32 weights to scale from.
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "fp16-backbone"
    AutoModel.from_pretrained(tiny_distilbert).half().save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_distilbert).save_pretrained(folder)
    model = EmotionClassifier(backbone=str(folder))
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    rebuilt = EmotionClassifier(backbone=str(folder), backbone_config=model.hparams.backbone_config)
    assert {parameter.dtype for parameter in rebuilt.parameters()} == {torch.float32}


def test_frozen_word_embeddings_stay_as_pretrained(tiny_bert, data_dir, tmp_path):
    model = EmotionClassifier(backbone=str(tiny_bert), freeze_word_embeddings=True, learning_rate=1e-2)
    before = model.model.get_input_embeddings().weight.detach().clone()
    other = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    data = EmotionDataModule(data_dir=str(data_dir), batch_size=8)
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(model, data)
    assert torch.equal(model.model.get_input_embeddings().weight, before)
    assert any(not torch.equal(p, other[name]) for name, p in model.named_parameters() if name in other)


@pytest.mark.slow
def test_compiled_model_trains_and_its_checkpoint_loads_uncompiled(tiny_bert, data_dir, tmp_path):
    model = EmotionClassifier(backbone=str(tiny_bert), compile=True)
    data = EmotionDataModule(data_dir=str(data_dir), batch_size=8)
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    restored = EmotionClassifier.load_from_checkpoint(tmp_path / "compiled.ckpt", map_location="cpu", compile=False)
    # Compiled in place: the weights keep their names.
    assert restored.state_dict().keys() == model.state_dict().keys()
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
