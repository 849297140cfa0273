"""A tokenized split, and how its rows become batches: padded to one of a few fixed lengths."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


def padded_lengths(max_length: int) -> tuple[int, ...]:
    """The lengths batches (and rows) are padded to: multiples of 8 up to 64, of 32 up to 256, then 384, 512, 768,
    ..., and ``max_length`` itself; at most 16 up to 512 tokens.

    Few shapes let kernels (cuDNN attention graphs, compiled code, CUDA graphs) be built once per shape;
    a batch pads at most 7 tokens more than its longest text below 64 tokens (tweets), and at most a third
    beyond 256.
    """
    ladder = [*range(8, 65, 8), *range(96, 257, 32)]
    while ladder[-1] < max_length:
        ladder.append(ladder[-1] * 3 // 2 if ladder[-1] % 3 else ladder[-1] * 4 // 3)
    return tuple(length for length in ladder if length < max_length) + (max_length,)


class TokenizedSplit(Dataset):
    """A tokenized split kept in memory-mapped Arrow; fetches whole batches at once.

    Only the columns a batch needs are read; ``text`` only where the output shows it.
    """

    def __init__(self, table, with_text: bool = False):
        columns = ["input_ids", "index"] + [name for name in ("label", "text") if name in table.column_names]
        if not with_text and "text" in columns:
            columns.remove("text")
        self.table = table.select_columns(columns)
        self.lengths = table.data.column("length").to_numpy()
        self.truncated = table.data.column("truncated").to_numpy(zero_copy_only=False)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        return self.table[index]

    def __getitems__(self, indices: list[int]) -> dict[str, list]:
        # One columnar read per batch instead of one row read per example.
        return self.table[indices]


def empty_batch(columns: dict[str, list]) -> dict:
    """A batch of no text, shaped as :class:`PadBatch` makes them (``input_ids`` of no row): the model answers it
    with no prediction, without running the encoder."""
    nothing = torch.zeros((0, 1), dtype=torch.long)
    batch = {"input_ids": nothing, "attention_mask": nothing, "index": torch.zeros(0, dtype=torch.long)}
    if "label" in columns:
        batch["labels"] = torch.zeros(0, dtype=torch.long)
    if "text" in columns:
        batch["text"] = []
    return batch


class PadBatch:
    """Collate a columnar batch: ``input_ids`` padded (the tokenizer's padding) to the first of
    :func:`padded_lengths` that holds the batch's longest text."""

    def __init__(self, tokenizer, max_length: int, fixed_lengths: bool = True):
        self.tokenizer = tokenizer
        # Without fixed lengths, every length up to max_length is one: each batch pads to its own longest.
        self.lengths = padded_lengths(max_length) if fixed_lengths else range(1, max_length + 1)

    def __call__(self, columns: dict[str, list]) -> dict:
        if not columns["input_ids"]:  # the empty batch of a process with no text of its own (LengthSortedBatchSampler)
            return empty_batch(columns)
        features = [{"input_ids": ids} for ids in columns["input_ids"]]
        longest = max(map(len, columns["input_ids"]))
        length = next(length for length in self.lengths if length >= longest)
        batch = dict(self.tokenizer.pad(features, padding="max_length", max_length=length, return_tensors="pt"))
        batch["index"] = torch.as_tensor(columns["index"])
        if "label" in columns:
            batch["labels"] = torch.as_tensor(columns["label"])
        if "text" in columns:
            batch["text"] = columns["text"]
        return batch
