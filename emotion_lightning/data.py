"""The emotion data: the label schema, and EmotionDataModule: the splits each stage needs, tokenized once into
the cache, and their loaders."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, SequentialSampler

from emotion_lightning import sources, tokenization
from emotion_lightning.batches import PadBatch, TokenizedSplit
from emotion_lightning.errors import SettingError, check_at_least
from emotion_lightning.packing import prediction_collate
from emotion_lightning.sampling import (
    LengthGroupedBatchSampler,
    LengthSortedBatchSampler,
    ResumableDataLoader,
    SequentialEpochSampler,
)
from emotion_lightning.tokenization import Encoder
from emotion_lightning.tokenized_cache import (
    build_folder,
    cache_folder,
    default_cache_dir,
    put_in_place,
    remove_abandoned_builds,
    source_fingerprint,
    tokenizer_fingerprint,
)

# The dataset's label ids, in order (dair-ai/emotion). Everything else derives from this.
LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")

# The labelled splits each stage reads (all of them for a data module used on its own).
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}
ALL_SPLITS = ("train", "validation", "test")

log = logging.getLogger(__name__)


class EmotionDataModule(L.LightningDataModule):
    """Splits of dair-ai/emotion (from the Hub or local files), tokenized once and cached.

    Texts are encoded as the model encodes them: its tokenizer, ``max_length`` and labels, taken from the model
    the Trainer runs (or handed over with :meth:`encode_like`); the data module has none of its own.

    Args:
        data_dir: local folder of train.*, validation.* (or val.*), test.* (txt, CSV, JSON lines, Parquet).
            A command needs only its own split. None: the Hub dataset.
        train_file: the training split's file, in place of the folder's.
        validation_file: the validation split's file, in place of the folder's (validate any labelled file).
        test_file: the test split's file, in place of the folder's (test any labelled file).
        dataset_name: the Hub dataset, when no local file is given.
        dataset_config: the Hub dataset's configuration.
        batch_size: texts per training batch.
        eval_batch_size: texts per validation, test and prediction batch.
        num_workers: data loader worker processes.
        predict_file: the texts to predict: one a line (.txt), or a CSV, JSON lines or Parquet file's text column.
        predict_texts: texts to classify, from Python (used when predict_file is None).
        group_by_length: put texts of similar length in the same training batch (less padding).
        fixed_lengths: pad batches to one of 16 fixed lengths (few shapes); false: each to its longest text.
        pack_predictions: pack the texts to predict into rows, several a row (default: on a CPU).
        cache_dir: where tokenized splits are kept (default ~/.cache/emotion_lightning or $EMOTION_LIGHTNING_CACHE).
        num_proc: processes that tokenize; default one per CPU (up to 8) for 100,000 rows or more, else one.
        shuffle_seed: seed of the training batches' order; default the run's seed_everything (0 from Python).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        dataset_name: str = "dair-ai/emotion",
        dataset_config: str | None = "split",
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        predict_file: str | None = None,
        predict_texts: Sequence[str] | None = None,
        group_by_length: bool = True,
        fixed_lengths: bool = True,
        pack_predictions: bool | None = None,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        shuffle_seed: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["predict_texts"])
        check_at_least("data.batch_size", batch_size, 1)
        check_at_least("data.eval_batch_size", eval_batch_size, 1)
        check_at_least("data.num_workers", num_workers, 0)
        if num_proc is not None:
            check_at_least("data.num_proc", num_proc, 1)
        self.data_dir = data_dir
        self.split_files_given = {"train": train_file, "validation": validation_file, "test": test_file}
        self.dataset_name = dataset_name
        self.dataset_config = dataset_config
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.predict_file = predict_file
        self.predict_texts = predict_texts
        self.group_by_length = group_by_length
        self.fixed_lengths = fixed_lengths
        self.pack_predictions = pack_predictions
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.num_proc = num_proc
        self.shuffle_seed = shuffle_seed or 0
        self.splits: dict[str, TokenizedSplit] = {}
        self._encoding: tuple | None = None  # the model's tokenizer, max_length and labels
        self._source_digest: str | None = None

    def encode_like(self, model) -> EmotionDataModule:
        """Encode texts exactly as ``model`` does: its tokenizer (restored from its checkpoint), its
        ``max_length`` and its labels. Without this call, the model the Trainer runs is asked, once."""
        self._encoding = (model.tokenizer, model.max_length, tuple(model.labels))
        return self

    def _model_encoding(self) -> tuple:
        if self._encoding is None:
            model = self.trainer.lightning_module if self.trainer is not None else None
            if model is None:
                raise SettingError(
                    "EmotionDataModule encodes texts as its model does: call data.encode_like(model), or give both "
                    "to a Trainer (trainer.fit(model, data))"
                )
            self.encode_like(model)
        return self._encoding

    @property
    def tokenizer(self):
        return self._model_encoding()[0]

    @property
    def max_length(self) -> int:
        """The model's ``max_length`` (cut to what its backbone takes): where texts are cut."""
        return self._model_encoding()[1]

    @property
    def labels(self) -> tuple[str, ...]:
        return self._model_encoding()[2]

    def state_dict(self) -> dict:
        """The data and batch size, kept in the checkpoint by Lightning for the model card ``export`` writes."""
        dataset = f"local files ({Path(self.data_dir).name})" if self.data_dir else self.dataset_name
        return {"batch_size": self.batch_size, "dataset": dataset}

    # -- where the tokenized data lives ------------------------------------------------------

    def split_files(self) -> dict[str, Path]:
        """The local file of each split there is one for: the folder's, or the one given by name."""
        found = sources.find_split_files(self.data_dir) if self.data_dir is not None else {}
        given = {split: Path(path) for split, path in self.split_files_given.items() if path is not None}
        for split, path in given.items():
            sources.check_split_file(path, split)
        return {**found, **given}

    def _source_fingerprint(self) -> str:
        # Read once per datamodule: prepare_data and setup both need it, and the files can be large.
        if self._source_digest is None:
            self._source_digest = source_fingerprint(self.dataset_name, self.dataset_config, self.split_files())
        return self._source_digest

    def cache_path(self) -> Path:
        """The folder of this data + tokenizer + settings; same inputs, same folder."""
        key = (self._source_fingerprint(), tokenizer_fingerprint(self.tokenizer), self.max_length, self.labels)
        return cache_folder(self.cache_dir, *key)

    # -- Lightning hooks ---------------------------------------------------------------------

    def _local(self) -> bool:
        return self.data_dir is not None or any(self.split_files_given.values())

    def _stage(self) -> str | None:
        return self.trainer.state.fn.value if self.trainer is not None and self.trainer.state.fn else None

    def prepare_data(self) -> None:
        """Read and tokenize the labelled splits once; later runs find them in the cache."""
        stage = self._stage()
        if stage == "predict":
            return  # predicting reads only the texts to classify, tokenized in setup
        if self._local():
            files = self.split_files()
            needed = STAGE_SPLITS.get(stage, ALL_SPLITS)
            if missing := [split for split in needed if split not in files] if stage else []:
                raise sources.missing_splits(self.data_dir, missing, stage)
        target = self.cache_path()
        if (target / "complete").is_file():
            log.info("Tokenized data found in %s", target)
            return
        # Built in a folder of its own and renamed into place when complete: a run killed mid-way
        # leaves nothing that looks finished, and processes on several nodes sharing the cache
        # cannot mix their files (the first rename wins, the others discard their copy).
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            remove_abandoned_builds(self.cache_dir)
            building = build_folder(self.cache_dir, target.name)
        except OSError as error:
            raise SettingError(
                f"cannot keep tokenized data in {self.cache_dir} (data.cache_dir, or $EMOTION_LIGHTNING_CACHE): "
                f"{error.strerror or error}; give a folder you can write to"
            ) from None
        try:
            # Rows read from files are streamed into Arrow files, tokenized from there, then removed.
            staging = building / "staging"
            staging.mkdir()
            if self._local():
                raw = {
                    split: sources.write_arrow(sources.iter_split_rows(path, self.labels), staging / f"{split}.arrow")
                    for split, path in self.split_files().items()
                }
            else:
                raw = sources.load_hub_splits(self.dataset_name, self.dataset_config, self.labels)
            if "train" in raw and len(seen := raw["train"].unique("label")) < 2:
                where = self.split_files()["train"] if self._local() else self.dataset_name
                raise sources.DataFileError(
                    where,
                    None,
                    f"every training example has the label {self.labels[seen[0]]!r}: a classifier "
                    "learns nothing from one label; give examples of at least two",
                )
            for split, rows in raw.items():
                self._tokenize(rows).save_to_disk(str(building / split))
            shutil.rmtree(staging, ignore_errors=True)
            put_in_place(building, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)

    def setup(self, stage: str) -> None:
        """Load the cached splits the stage needs (memory-mapped), or tokenize the predict texts."""
        import datasets

        if stage == "predict":
            texts = self._predict_texts()
            rows = datasets.Dataset.from_dict({"text": texts, "index": list(range(len(texts)))})
            self.splits["predict"] = TokenizedSplit(self._tokenize(rows), with_text=True)
            return
        target = self.cache_path()
        if not (target / "complete").is_file():
            raise RuntimeError(f"No tokenized data in {target}: prepare_data() must run before setup()")
        for split in STAGE_SPLITS.get(stage, ALL_SPLITS):
            if not (target / split).is_dir():
                raise sources.missing_splits(
                    self.data_dir or f"{self.dataset_name} ({self.dataset_config})", [split], stage
                )
            # Evaluation batches carry their texts, for reports of the most confident mistakes.
            with_text = split != "train"
            self.splits[split] = TokenizedSplit(datasets.load_from_disk(str(target / split)), with_text=with_text)

    def predict_texts_in_order(self) -> list[str]:
        """The texts ``predict`` classifies, in input order (after ``setup("predict")``)."""
        return list(self.splits["predict"].table["text"])

    def _predict_texts(self) -> list[str]:
        if self.predict_file is not None:
            return sources.read_predict_file(self.predict_file, self.labels)
        if self.predict_texts is None:
            raise SettingError("nothing to predict: give --data.predict_file (one text per line) or --text TEXT")
        return sources.check_texts(self.predict_texts)

    def _tokenize(self, rows):
        """Tokenize a ``datasets.Dataset`` with ``text`` (and ``label``, ``index``) columns."""
        import pyarrow.compute as pc

        max_length = self.max_length
        encoder, processes = Encoder(self.tokenizer, max_length), tokenization.processes_for(len(rows), self.num_proc)
        # A progress bar only for splits worth waiting for, not for a few texts predicted from Python.
        tokenized = tokenization.tokenize(rows, encoder, processes, progress=len(rows) >= 10_000)
        truncated = pc.sum(tokenized.data.column("truncated")).as_py() or 0
        if truncated:
            rank_zero_warn(f"{truncated} of {len(rows)} texts were longer than {max_length} tokens and were truncated")
        return tokenized

    # -- loaders -----------------------------------------------------------------------------

    def _loader(self, split: str, training: bool) -> DataLoader:
        if self.num_workers > 0:
            # Forked workers must not use the tokenizer's threads (tokenizers has no call for it, only this variable).
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        dataset = self.splits[split]
        # Shuffling is seeded by shuffle_seed and the epoch alone, and the loader gets its own generator: the
        # global random state is left to dropout, so that a run resumed from a checkpoint trains on exactly what
        # an uninterrupted run would.
        seed = self.shuffle_seed
        if training:
            batches = LengthGroupedBatchSampler(
                SequentialEpochSampler(dataset),
                self.batch_size,
                lengths=dataset.lengths,
                # Pools of one batch: random batches without grouping by length.
                pool_batches=50 if self.group_by_length else 1,
                seed=seed,
            )
        else:
            done = set(self._predicted_before()) if split == "predict" else set()
            # At least one text is predicted again, so that the run still ends by writing the output.
            done.discard(len(dataset) - 1)
            trainer = self.trainer
            batches = LengthSortedBatchSampler(
                SequentialSampler(dataset),
                self.eval_batch_size,
                lengths=dataset.lengths,
                skip=done,
                rank=trainer.global_rank if trainer is not None else 0,
                world_size=trainer.world_size if trainer is not None else 1,
            )
        # Only training needs to resume mid-way; evaluation starts over and is deterministic anyway.
        loader_class = ResumableDataLoader if training else DataLoader
        collate = PadBatch(self.tokenizer, self.max_length, self.fixed_lengths)
        if split == "predict" and (trainer := self.trainer) is not None and trainer.lightning_module is not None:
            model, device = trainer.lightning_module.model, trainer.strategy.root_device
            collate = prediction_collate(collate, self.tokenizer.pad_token_id, model, device, self.pack_predictions)
        return loader_class(
            dataset,
            batch_sampler=batches,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # Page-locked batches copy to a GPU without the host waiting for it.
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", training=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", training=False)

    def _predicted_before(self) -> set[int]:
        """The texts a stopped prediction into the same output already predicted, as its writer found them; asked
        when the loader is built, once the model's weights are loaded (the writer checks they are the same)."""
        from emotion_lightning.callbacks.prediction_writer import PredictionWriter

        writers = [c for c in getattr(self.trainer, "callbacks", []) if isinstance(c, PredictionWriter)]
        return writers[0].predicted_before(self.trainer) if writers else set()
