"""Length-aware batch samplers: every index once, less padding, still random."""

from __future__ import annotations

import random

import torch
from torch.utils.data import RandomSampler, SequentialSampler

from emotion_lightning.sampling import LengthGroupedBatchSampler, LengthSortedBatchSampler

_rng = random.Random(0)
LENGTHS = [_rng.randint(3, 90) for _ in range(1000)]


def padded_tokens(batches) -> int:
    return sum(len(batch) * max(LENGTHS[i] for i in batch) for batch in batches)


def test_grouped_batches_cover_every_index_once_with_less_padding():
    torch.manual_seed(0)
    indices = range(len(LENGTHS))
    grouped = list(LengthGroupedBatchSampler(RandomSampler(indices), 16, lengths=LENGTHS))
    assert sorted(i for batch in grouped for i in batch) == list(indices)
    assert len(grouped) == len(LengthGroupedBatchSampler(RandomSampler(indices), 16, lengths=LENGTHS))
    assert sum(len(batch) < 16 for batch in grouped) == 1
    random_batches = [list(range(len(LENGTHS)))[i : i + 16] for i in range(0, len(LENGTHS), 16)]
    assert padded_tokens(grouped) < 0.75 * padded_tokens(random_batches)


def test_grouped_batches_differ_between_epochs():
    torch.manual_seed(0)
    sampler = LengthGroupedBatchSampler(RandomSampler(range(len(LENGTHS))), 16, lengths=LENGTHS)
    assert list(sampler) != list(sampler)


def test_grouped_drop_last_keeps_only_full_batches():
    sampler = LengthGroupedBatchSampler(RandomSampler(range(100)), 16, drop_last=True, lengths=LENGTHS)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6
    assert all(len(batch) == 16 for batch in batches)


def test_sorted_batches_go_longest_first_and_cover_everything():
    sampler = LengthSortedBatchSampler(SequentialSampler(range(len(LENGTHS))), 32, lengths=LENGTHS)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS, reverse=True)
