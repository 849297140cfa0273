"""EmotionDataModule: sources, tokenization cache, dynamic padding."""

from __future__ import annotations

import os

import pytest

from emotion_lightning.data import LABELS, EmotionDataModule
from emotion_lightning.sources import DataFileError
from emotion_lightning.tokenization import LARGE_DATA_ROWS, processes_for
from tests.conftest import fixture_rows, write_semicolon_file


def like(backbone, data: EmotionDataModule, **model_settings) -> EmotionDataModule:
    """``data`` encoding texts as a model of ``backbone`` does (the data module has no tokenizer of its own)."""
    from emotion_lightning import EmotionClassifier

    return data.encode_like(EmotionClassifier(backbone=str(backbone), **model_settings))


def make_datamodule(backbone, data_dir, tmp_path, max_length: int = 512, **settings) -> EmotionDataModule:
    data = EmotionDataModule(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), **settings)
    return like(backbone, data, max_length=max_length)


def test_batches_are_padded_to_the_first_padded_length_that_holds_their_longest(tiny_distilbert, data_dir, tmp_path):
    from emotion_lightning.batches import padded_lengths

    datamodule = make_datamodule(tiny_distilbert, data_dir, tmp_path, batch_size=4)
    datamodule.prepare_data()
    datamodule.setup("fit")
    lengths = padded_lengths(64)
    for batch in datamodule.train_dataloader():
        # Only inputs every backbone accepts: DistilBERT has no token_type_ids.
        assert set(batch) == {"input_ids", "attention_mask", "labels", "index"}
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        longest = int(batch["attention_mask"].sum(dim=1).max())
        assert batch["input_ids"].shape[1] == next(length for length in lengths if length >= longest)
        pad = datamodule.tokenizer.pad_token_id
        assert ((batch["input_ids"] == pad) == (batch["attention_mask"] == 0)).all()
    assert len(datamodule.splits["train"]) == 8 * len(LABELS)


def test_labels_and_texts_stay_together(tiny_distilbert, data_dir, tmp_path):
    datamodule = make_datamodule(tiny_distilbert, data_dir, tmp_path)
    datamodule.prepare_data()
    datamodule.setup("validate")
    rows = fixture_rows(3, seed=2)
    for batch in datamodule.val_dataloader():
        for ids, label, index in zip(batch["input_ids"], batch["labels"], batch["index"], strict=True):
            text, label_name = rows[int(index)]
            decoded = datamodule.tokenizer.decode(ids, skip_special_tokens=True)
            assert decoded == text
            assert LABELS[int(label)] == label_name


def test_second_run_reuses_the_tokenized_cache(tiny_distilbert, data_dir, tmp_path, monkeypatch):
    first = make_datamodule(tiny_distilbert, data_dir, tmp_path)
    first.prepare_data()

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again although the cache holds this data")

    monkeypatch.setattr(EmotionDataModule, "_tokenize", no_tokenizing)
    second = make_datamodule(tiny_distilbert, data_dir, tmp_path)
    second.prepare_data()
    second.setup("fit")
    assert second.cache_path() == first.cache_path()
    assert len(second.splits["validation"]) == 3 * len(LABELS)


def test_cache_changes_with_data_and_settings(tiny_distilbert, data_dir, tmp_path):
    other_data = tmp_path / "other"
    other_data.mkdir()
    write_semicolon_file(other_data / "train.txt", fixture_rows(2, seed=9))
    write_semicolon_file(other_data / "validation.txt", fixture_rows(1, seed=9))
    base = make_datamodule(tiny_distilbert, data_dir, tmp_path).cache_path()
    assert make_datamodule(tiny_distilbert, other_data, tmp_path).cache_path() != base
    assert make_datamodule(tiny_distilbert, data_dir, tmp_path, max_length=8).cache_path() != base


def test_truncation_at_max_length(tiny_distilbert, data_dir, tmp_path):
    datamodule = make_datamodule(tiny_distilbert, data_dir, tmp_path, max_length=5)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert max(datamodule.splits["train"].lengths) == 5


def test_predict_texts_from_python_keep_their_index(tiny_distilbert, tmp_path):
    datamodule = like(tiny_distilbert, EmotionDataModule(predict_texts=["i am glad", "so very sad today"]))
    datamodule.setup("predict")
    batch = next(iter(datamodule.predict_dataloader()))
    # Longest first; the index says where each text came from.
    assert batch["index"].tolist() == [1, 0]
    assert batch["text"] == ["so very sad today", "i am glad"]


def test_predict_texts_must_be_strings(tiny_distilbert):
    datamodule = like(tiny_distilbert, EmotionDataModule(predict_texts=["fine", 3]))
    with pytest.raises(TypeError, match=r"1 are not: \[1\] int"):
        datamodule.setup("predict")


def test_hub_dataset_path(tiny_distilbert, tmp_path, monkeypatch):
    """Source A, with datasets.load_dataset standing in for the Hub (which tests cannot reach)."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABELS))})

    def split(seed):
        rows = fixture_rows(2, seed=seed)
        return datasets.Dataset.from_dict(
            {"text": [t for t, _ in rows], "label": [LABELS.index(label) for _, label in rows]}, features=features
        )

    calls = []

    def fake_load_dataset(name, config):
        calls.append((name, config))
        return datasets.DatasetDict({"train": split(1), "validation": split(2), "test": split(3)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    datamodule = like(tiny_distilbert, EmotionDataModule(cache_dir=str(tmp_path)))
    datamodule.prepare_data()
    datamodule.setup("test")
    assert calls == [("dair-ai/emotion", "split")]
    assert len(datamodule.splits["test"]) == 2 * len(LABELS)


def test_predicting_reads_no_labelled_split(tiny_distilbert, tmp_path, monkeypatch):
    """Predict from Python with the Hub unreachable: only the given texts are read."""
    import datasets
    import lightning as L

    from emotion_lightning import EmotionClassifier

    def no_hub(*args, **kwargs):
        raise AssertionError("predict loaded a labelled dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    data = EmotionDataModule(predict_texts=["i am glad", "so sad"])  # encoded as the Trainer's model: asked
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batches = trainer.predict(EmotionClassifier(backbone=str(tiny_distilbert)), data)
    assert sorted(i for batch in batches for i in batch["index"].tolist()) == [0, 1]


def test_long_texts_truncated_with_a_count_and_max_length_clamped(tiny_distilbert):
    """The tiny tokenizer's model accepts 64 tokens: max_length 512 is clamped, long texts counted."""
    long_text = " ".join(["happy"] * 200)
    with pytest.warns(UserWarning) as warnings:
        data = like(tiny_distilbert, EmotionDataModule(predict_texts=[long_text, "sad", long_text]))
        data.setup("predict")
    messages = " | ".join(str(warning.message) for warning in warnings)
    assert "max_length=512 is more than" in messages
    assert "2 of 3 texts were longer than 64 tokens and were truncated" in messages
    assert max(data.splits["predict"].lengths) == 64


def test_tokenizing_in_several_processes_gives_the_same_data(tiny_distilbert, data_dir, tmp_path):
    one = make_datamodule(tiny_distilbert, data_dir, tmp_path / "one", num_proc=1)
    two = make_datamodule(tiny_distilbert, data_dir, tmp_path / "two", num_proc=2)
    for datamodule in (one, two):
        datamodule.prepare_data()
        datamodule.setup("fit")
    assert processes_for(10, two.num_proc) == 2
    for split in ("train", "validation"):
        assert two.splits[split].table.to_dict() == one.splits[split].table.to_dict()


def test_number_of_tokenizing_processes_follows_the_size_of_the_data(tiny_distilbert, data_dir, tmp_path):
    automatic = make_datamodule(tiny_distilbert, data_dir, tmp_path).num_proc
    assert processes_for(LARGE_DATA_ROWS - 1, automatic) == 1
    assert processes_for(LARGE_DATA_ROWS, automatic) == min(8, os.cpu_count() or 1)


def test_prepare_data_leaves_only_the_finished_cache(tiny_distilbert, data_dir, tmp_path):
    datamodule = make_datamodule(tiny_distilbert, data_dir, tmp_path)
    datamodule.prepare_data()
    target = datamodule.cache_path()
    assert list(datamodule.cache_dir.iterdir()) == [target]  # no building or staging folders
    assert sorted(path.name for path in target.iterdir()) == ["complete", "test", "train", "validation"]


def test_a_bad_row_deep_in_a_file_is_named_and_leaves_no_cache(tiny_distilbert, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = fixture_rows(5000, seed=4)  # 30,000 rows: the bad one is in the third chunk written
    write_semicolon_file(folder / "train.txt", rows[:25_000] + [("no label here", "")] + rows[25_000:])
    write_semicolon_file(folder / "validation.txt", rows[:10])
    datamodule = make_datamodule(tiny_distilbert, folder, tmp_path)
    with pytest.raises(DataFileError, match=r"train.txt, line 25001: missing label"):
        datamodule.prepare_data()
    assert list(datamodule.cache_dir.iterdir()) == []
