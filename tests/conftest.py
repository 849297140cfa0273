"""Tiny models and fixture data, all built locally: the tests need no network."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# Each test worker (`-n 2`, one a core) computes on one thread, and so do the processes its tests start: two workers
# of a core's worth of threads each wait on each other's spinning threads (the suite: 747 s so, 500 s like this).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from emotion_lightning.data import LABELS  # noqa: E402

# A few words that carry each label, so that a tiny model has something to learn.
LABEL_WORDS = {
    "sadness": ["sad", "lonely", "gloomy"],
    "joy": ["happy", "glad", "cheerful"],
    "love": ["loving", "tender", "adoring"],
    "anger": ["angry", "furious", "annoyed"],
    "fear": ["scared", "afraid", "nervous"],
    "surprise": ["amazed", "surprised", "shocked"],
}
FILLER_WORDS = ["i", "feel", "so", "really", "today", "very", "am", "this", "about", "my", "exam", "passed"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def fixture_rows(count_per_label: int, seed: int) -> list[tuple[str, str]]:
    """Labelled texts of varied length, in a shuffled but fixed order."""
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        for _ in range(count_per_label):
            words = rng.choices(FILLER_WORDS, k=rng.randint(1, 12)) + [rng.choice(LABEL_WORDS[label])]
            rng.shuffle(words)
            rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def read_split(path: Path, labels=LABELS) -> dict[str, list]:
    """A split file's texts and label ids, read the way training reads it."""
    from emotion_lightning.sources import iter_split_rows

    texts, label_ids = zip(*iter_split_rows(path, labels), strict=True)
    return {"text": list(texts), "label": list(label_ids)}


def write_semicolon_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{text};{label}\n" for text, label in rows))
    return path


# The longest modules first: the two workers (`-n 2`) then run them side by side, not one of them last, alone.
FIRST = ("test_real_data.py", "test_resume.py", "test_distributed.py", "test_readme.py", "test_faults.py")


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


def pytest_report_header(config) -> str:
    """What the suite runs with, at the top of every run (CI's log says which versions passed)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    names = ("torch", "lightning", "transformers", "datasets", "torchmetrics", "jsonargparse", "wandb", "optuna")
    names += ("uvicorn", "selenium")
    return "versions: " + ", ".join(f"{name} {installed(name)}" for name in names)


@pytest.fixture(autouse=True, scope="session")
def offline_environment(tmp_path_factory):
    """No test reaches the Hub, and tokenized caches go to a temporary folder."""
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_DATASETS_OFFLINE", "1")
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("EMOTION_LIGHTNING_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def no_wandb_run_left_open():
    """A W&B run a test leaves open would be reused by the next one in this process: finish it."""
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """train / validation / test in the original ``text;label`` format."""
    folder = tmp_path_factory.mktemp("emotion")
    write_semicolon_file(folder / "train.txt", fixture_rows(8, seed=1))
    write_semicolon_file(folder / "validation.txt", fixture_rows(3, seed=2))
    write_semicolon_file(folder / "test.txt", fixture_rows(3, seed=3))
    return folder


def _save_tokenizer(folder: Path) -> None:
    """An uncased WordPiece tokenizer like DistilBERT's, over a few dozen words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for ws in LABEL_WORDS.values() for w in ws} | set(FILLER_WORDS))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    tokenizer.save_pretrained(folder)


def _vocab_size() -> int:
    return len(SPECIAL_TOKENS) + len({w for ws in LABEL_WORDS.values() for w in ws} | set(FILLER_WORDS))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and its WordPiece tokenizer, as a local folder."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    _save_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide DistilBERT (takes no token_type_ids) with random weights, as a local folder."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    folder = tmp_path_factory.mktemp("tiny-distilbert")
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=_vocab_size(), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
    )
    DistilBertModel(config).save_pretrained(folder)
    _save_tokenizer(folder)
    return folder


def quiet_run_args(root: Path) -> list[str]:
    """CLI arguments for a run into ``root`` with no logger and no progress bar."""
    return [
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]


def tiny_training_args(backbone: Path, data_dir: Path, epochs: int) -> list[str]:
    """CLI arguments to train ``backbone`` on the CPU on ``data_dir`` in batches of 8 for ``epochs``."""
    return [
        "--model.backbone",
        str(backbone),
        "--model.learning_rate",
        "1e-3",
        "--data.data_dir",
        str(data_dir),
        "--data.batch_size",
        "8",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "cpu",
    ]


@pytest.fixture
def fit_args(tiny_distilbert, data_dir, tmp_path) -> list[str]:
    """CLI arguments for a short CPU fit of the tiny model on the fixture data, into tmp_path."""
    return [
        *tiny_training_args(tiny_distilbert, data_dir, epochs=2),
        *quiet_run_args(tmp_path),
        "--trainer.enable_model_summary",
        "false",
    ]


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_distilbert, data_dir, tmp_path_factory) -> Path:
    """A checkpoint of the tiny DistilBERT after a few training steps on the fixture data."""
    import lightning as L

    from emotion_lightning import EmotionClassifier, EmotionDataModule

    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    L.seed_everything(0)
    model = EmotionClassifier(backbone=str(tiny_distilbert), learning_rate=1e-3)
    data = EmotionDataModule(data_dir=str(data_dir), batch_size=8)
    trainer = L.Trainer(
        max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=folder
    )
    trainer.fit(model, data)
    trainer.save_checkpoint(folder / "model.ckpt")
    return folder / "model.ckpt"


def run_folder(root: Path) -> Path:
    """The newest run folder (``version_N``) that fit made under ``root``."""
    from emotion_lightning.runs import run_folders

    folders = run_folders(root)
    assert folders, f"no run folder in {root}"
    return folders[-1]
