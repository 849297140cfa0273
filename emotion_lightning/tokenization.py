"""Turn texts into token ids, cut by the tokenizer, in worker processes that end with their parent.

Large splits are tokenized by several processes, each on a contiguous shard. The workers die with the
process that started them, even when it is killed outright (SIGKILL): nothing keeps computing for a run
that is gone. Build folders that a killed run leaves in the cache are removed by the next run.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import tempfile
import uuid
from pathlib import Path

from emotion_lightning import processes

# From this many rows on, tokenizing in several processes pays for starting them.
LARGE_DATA_ROWS = 100_000
# Batch of texts handed to the tokenizer at once.
BATCH_SIZE = 2000
# Texts longer than this many characters per token of max_length are cut (at a space) before tokenizing,
# once enough of them is known to be truncated: a 20 MB line must not become millions of token ids.
CHARACTERS_PER_TOKEN = 32


class Encoder:
    """Texts -> token ids cut at ``max_length`` by the tokenizer, their lengths, and whether each was cut
    (a ``datasets.map`` function)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts, cut = zip(*map(self._beginning, batch["text"]), strict=True) if batch["text"] else ((), ())
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_overflowing_tokens=True, verbose=False
        )
        # With return_overflowing_tokens, a text that was cut comes back as several rows: the first is kept.
        input_ids, truncated = [], list(cut)
        for ids, text_index in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"], strict=True):
            if text_index < len(input_ids):
                truncated[text_index] = True
            else:
                input_ids.append(ids)
        return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids], "truncated": truncated}

    def _beginning(self, text: str) -> tuple[str, bool]:
        """The text, or, for a very long one, a beginning of it (ending at a space) that already holds more
        than ``max_length`` tokens: the same first tokens, without tokenizing the rest. Says whether it was cut."""
        limit = self.max_length * CHARACTERS_PER_TOKEN
        while limit < len(text):
            end = max(text.rfind(space, 0, limit) for space in " \t\n")
            beginning = text[: end if end > 0 else limit]
            if len(self.tokenizer(beginning, add_special_tokens=False, verbose=False)["input_ids"]) > self.max_length:
                return beginning, True
            limit *= 4
        return text, False


def processes_for(rows: int, num_proc: int | None) -> int:
    """``num_proc`` if given; else one process per CPU (up to 8) for large data, one for small."""
    if num_proc is not None:
        return num_proc
    return 1 if rows < LARGE_DATA_ROWS else max(1, min(8, os.cpu_count() or 1))


def tokenize(rows, encoder: Encoder, processes: int = 1, progress: bool = True):
    """``rows`` (a ``datasets.Dataset`` with a ``text`` column) with ``input_ids``, ``length`` and ``truncated``.

    Several processes only for rows kept in files (the workers read them from there). ``progress``:
    show the library's progress bar (not for a few texts predicted from Python).
    """
    if processes > 1 and len(rows) >= processes and rows.cache_files:
        return _tokenize_in_processes(rows, encoder, processes)
    with _progress_bars(progress):
        return _map(rows, encoder, desc="Tokenizing")


def _map(rows, encoder: Encoder, **settings):
    # A fresh fingerprint, not a computed one: datasets would hash the whole tokenizer on every call (a third
    # of a second), and the result is cached by the data module under its own key anyway.
    return rows.map(encoder, batched=True, batch_size=BATCH_SIZE, new_fingerprint=uuid.uuid4().hex, **settings)


@contextlib.contextmanager
def _progress_bars(show: bool):
    import datasets

    hide = not show and not datasets.are_progress_bars_disabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hide:
            datasets.enable_progress_bars()


# -- several processes ---------------------------------------------------------------------------


def _end_with_parent() -> None:
    """Worker start-up: die when the parent dies, and take SIGTERM / SIGINT as a plain process does."""
    # A forked worker inherits the parent's Python handlers (Lightning's SIGTERM handler only sets a
    # flag), which would keep it computing after a scheduler stopped the job.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # The tokenizer's own threads, after a fork: off (tokenizers has no call for it, only this variable).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    processes.end_with_parent()


def _tokenize_shard(rows, encoder: Encoder, processes: int, folder: str, index: int) -> str:
    shard = rows.shard(processes, index, contiguous=True)
    path = Path(folder) / f"shard-{index}"
    _map(shard, encoder).save_to_disk(str(path))
    return str(path)


def _tokenize_in_processes(rows, encoder: Encoder, processes: int):
    import datasets

    # Beside the rows' own file (a build's staging folder): removed with it. The rows go to the workers as
    # their file's name (a memory-mapped dataset pickles as that), the encoder as its tokenizer.
    folder = tempfile.mkdtemp(prefix="shards-", dir=Path(rows.cache_files[0]["filename"]).parent)
    job = functools.partial(_tokenize_shard, rows, encoder, processes, folder)
    with multiprocessing.get_context("fork").Pool(processes, initializer=_end_with_parent) as pool:
        paths = pool.map(job, range(processes))
    return datasets.concatenate_datasets([datasets.load_from_disk(path) for path in paths])
