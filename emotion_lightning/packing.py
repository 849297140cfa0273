"""Texts packed into rows for prediction: several short texts share a row, and each sees only itself.

A batch of tweets padded to its longest text is mostly padding. Packed, the texts are laid end to end in rows of at
most ``ROW_LENGTH`` tokens (longest first, each into the first row with room), with a block-diagonal attention mask
(a text attends to itself only) and position ids that start again at every text: each text's hidden states are
what they are alone, and its [CLS] is read where it starts (:mod:`emotion_lightning.first_token`). Rows are padded to
one of the fixed lengths, so that shapes stay few. BERT's and DistilBERT's heads read the [CLS]; other architectures
are predicted padded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from emotion_lightning.batches import empty_batch, padded_lengths
from emotion_lightning.first_token import reads_first_token

# Tokens in a row: long enough to hold a dozen tweets, short enough that attention over the whole row (masked)
# costs less than the padding it saves (docs/performance.md).
ROW_LENGTH = 256
# A batch whose padding adds at most this share to its tokens is run padded, not packed: a packed row's attention
# spans the whole row, so the sorted, like-length batches of a long call ran faster padded (2,000 validation texts in
# batches of 64, MiniLM, bf16: 354-392 texts/s padded, 281-347 packed; docs/performance.md).
PADDING_NOT_WORTH_PACKING = 0.25


@dataclass(frozen=True)
class PackedRows:
    """Rows of packed texts. ``starts[i]`` is the (row, column) of text ``i``'s first token, ``lengths[i]`` its
    length, ``index[i]`` its index in the input; texts keep their input order (logits come in it)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor  # (rows, 1, length, length), True where a token may attend to another
    starts: torch.Tensor
    lengths: torch.Tensor
    index: torch.Tensor
    pad_id: int

    def to(self, device) -> PackedRows:
        moved = {name: getattr(self, name).to(device) for name in self.__dataclass_fields__ if name != "pad_id"}
        return PackedRows(**moved, pad_id=self.pad_id)

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """What :func:`~emotion_lightning.first_token.first_token_logits` takes after the model: input ids, attention
        mask, position ids, starts."""
        return self.input_ids, self.attention_mask, self.position_ids, self.starts

    def subset(self, keep: torch.Tensor) -> PackedRows:
        """The texts where ``keep`` is true, packed again on their own."""
        ids = [
            self.input_ids[row, column : column + length].tolist()
            for (row, column), length in zip(self.starts[keep].tolist(), self.lengths[keep].tolist(), strict=True)
        ]
        return pack(ids, self.index[keep].cpu().tolist(), self.pad_id).to(self.input_ids.device)


def pack(token_ids: list[list[int]], index: list[int], pad_id: int, row_length: int = ROW_LENGTH) -> PackedRows:
    """Texts' token ids into rows (a text longer than ``row_length`` gets a row of its own)."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]), reverse=True)
    rows: list[list[int]] = []  # the texts (positions in token_ids) of each row
    room: list[int] = []
    for text in order:
        length = len(token_ids[text])
        row = next((r for r, left in enumerate(room) if left >= length), None)
        if row is None:
            rows.append([]), room.append(max(row_length, length))
            row = len(rows) - 1
        rows[row].append(text)
        room[row] -= length
    width = max(sum(len(token_ids[t]) for t in row) for row in rows)
    width = next(length for length in padded_lengths(max(width, row_length)) if length >= width)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)  # which text a token is of; -1: padding
    starts = torch.zeros((len(token_ids), 2), dtype=torch.long)  # in input order, whatever row a text went to
    for number, row in enumerate(rows):
        column = 0
        for text in row:
            ids = token_ids[text]
            input_ids[number, column : column + len(ids)] = torch.tensor(ids)
            position_ids[number, column : column + len(ids)] = torch.arange(len(ids))
            segments[number, column : column + len(ids)] = text
            starts[text] = torch.tensor((number, column))
            column += len(ids)
    # Padding attends to itself only: its rows of the attention stay defined (and unread).
    same = segments[:, :, None] == segments[:, None, :]
    alone = torch.eye(width, dtype=torch.bool)[None] & (segments[:, :, None] < 0)
    return PackedRows(
        input_ids,
        position_ids,
        (same | alone)[:, None],
        starts,
        torch.tensor([len(ids) for ids in token_ids]),
        torch.tensor(index),
        pad_id,
    )


class PackTexts:
    """Collate a columnar batch of texts into :class:`PackedRows` (``{"packed", "index"}``, and ``text``)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, columns: dict[str, list]) -> dict:
        if not columns["input_ids"]:  # the empty batch of a process with no text of its own: nothing to pack
            return empty_batch(columns)
        rows = pack(columns["input_ids"], list(columns["index"]), self.pad_id)
        batch = {"packed": rows, "index": rows.index}
        if "text" in columns:  # as PadBatch: only where the output shows it
            batch["text"] = columns["text"]
        return batch


class PackWherePaddingWastes:
    """Collate a batch padded (``pad_batch``, a :class:`~emotion_lightning.batches.PadBatch`) where padding adds at most
    ``PADDING_NOT_WORTH_PACKING`` to its tokens, else packed: the texts of a short call (a server's batch) come in all
    lengths, those of a long one sorted by length. Texts all of one length are not padded at all: their attention
    needs no mask (see :func:`like_length_batches`)."""

    def __init__(self, pad_batch, pad_id: int):
        self.pad_batch = pad_batch
        self.pack_texts = PackTexts(pad_id)
        self.exact_batch = copy.copy(pad_batch)
        self.exact_batch.lengths = range(1, max(pad_batch.lengths) + 1)  # each batch to its own longest

    def __call__(self, columns: dict[str, list]) -> dict:
        lengths = [len(ids) for ids in columns["input_ids"]]
        if not lengths:
            return self.pad_batch(columns)
        if min(lengths) == max(lengths):
            return self.exact_batch(columns)
        padded_to = next(length for length in self.pad_batch.lengths if length >= max(lengths))
        if len(lengths) * padded_to <= (1 + PADDING_NOT_WORTH_PACKING) * sum(lengths):
            return self.pad_batch(columns)
        return self.pack_texts(columns)


def should_pack(model, device: torch.device, pack: bool | None) -> bool:
    """Whether to pack for ``model`` on ``device``: ``pack``, else where it was measured faster (a CPU); never for
    a head that cannot be packed."""
    return (device.type == "cpu" if pack is None else pack) and reads_first_token(model)


# Where at least this many texts of a call share one length, they make batches of their own (see like_length_batches).
ONE_LENGTH_BATCH_FROM = 16


def like_length_batches(order: list[int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Texts (``order``: their indices, sorted by length) in batches of at most ``batch_size``: each run of at least
    ``ONE_LENGTH_BATCH_FROM`` texts of one length in batches of its own, the rest in sorted batches together.

    A batch of one length has no padding, and its attention no mask, which runs a faster kernel: the 2,000
    validation texts (MiniLM, bf16, 2 cores) ran 538-563 texts/s so, against 448-458 in sorted batches padded to the
    fixed lengths (docs/performance.md). A server's batch of a few dozen texts of every length stays together.
    """
    alone, rest = [], []
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and lengths[order[end]] == lengths[order[start]]:
            end += 1
        run = order[start:end]
        if len(run) >= ONE_LENGTH_BATCH_FROM:
            alone.extend(run[i : i + batch_size] for i in range(0, len(run), batch_size))
        else:
            rest.extend(run)
        start = end
    return alone + [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]


def prediction_collate(pad_batch, pad_id: int, model, device: torch.device, pack: bool | None):
    """How batches to predict are collated: ``pack`` true, every batch packed; false (or a head that cannot be
    packed), padded; None, on a CPU each batch packed where padding wastes (:class:`PackWherePaddingWastes`)."""
    if not should_pack(model, device, pack):
        return pad_batch
    return PackTexts(pad_id) if pack else PackWherePaddingWastes(pad_batch, pad_id)
