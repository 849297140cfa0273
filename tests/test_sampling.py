"""Length-aware batch samplers: every index once, less padding, still random."""

from __future__ import annotations

import random

import torch
from torch.utils.data import RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from emotion_lightning.sampling import (
    LengthGroupedBatchSampler,
    LengthSortedBatchSampler,
    ResumableDataLoader,
    SequentialEpochSampler,
)

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


def grouped(seed: int = 0) -> LengthGroupedBatchSampler:
    return LengthGroupedBatchSampler(SequentialEpochSampler(LENGTHS), 16, lengths=LENGTHS, seed=seed)


def test_grouped_order_depends_on_seed_and_epoch_only():
    sampler = grouped()
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(1)  # the global random state plays no part
    assert list(sampler) == first
    assert list(grouped(seed=1)) != first
    sampler.sampler.set_epoch(1)
    assert sampler.epoch == 1
    second_epoch = list(sampler)
    assert second_epoch != first
    assert sorted(i for batch in second_epoch for i in batch) == list(range(len(LENGTHS)))


def test_resumable_loader_continues_after_the_batches_already_handed_out():
    uninterrupted = [
        batch.tolist() for batch in ResumableDataLoader(list(range(len(LENGTHS))), batch_sampler=grouped())
    ]
    loader = ResumableDataLoader(list(range(len(LENGTHS))), batch_sampler=grouped())
    handed_out = []
    for batch in loader:
        handed_out.append(batch.tolist())
        if len(handed_out) == 5:
            break
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_done": 5}

    resumed = ResumableDataLoader(list(range(len(LENGTHS))), batch_sampler=grouped())
    resumed.load_state_dict(state)
    rest = [batch.tolist() for batch in resumed]
    assert handed_out + rest == uninterrupted
    assert resumed.state_dict() == {"epoch": 0, "batches_done": len(uninterrupted)}
    # Only once: the next epoch is whole again.
    assert len(list(resumed)) == len(uninterrupted)


def test_resume_state_of_another_epoch_is_not_applied():
    loader = ResumableDataLoader(list(range(len(LENGTHS))), batch_sampler=grouped())
    loader.load_state_dict({"epoch": 0, "batches_done": 5})
    loader.batch_sampler.sampler.set_epoch(1)
    assert len(list(loader)) == len(loader)


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


def test_sorted_batches_under_ddp_hold_every_text_exactly_once():
    """A distributed sampler pads ranks with repeats; evaluation must not count those twice."""
    dataset = list(range(7))  # 7 texts over 2 ranks: the sampler would give 4 + 4
    shares = []
    for rank in range(2):
        distributed = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        assert len(distributed) == 4
        batches = list(LengthSortedBatchSampler(distributed, 3, lengths=LENGTHS))
        assert len(batches) == len(LengthSortedBatchSampler(distributed, 3, lengths=LENGTHS))
        shares.append([i for batch in batches for i in batch])
    assert sorted(shares[0] + shares[1]) == dataset
    assert (len(shares[0]), len(shares[1])) == (4, 3)
