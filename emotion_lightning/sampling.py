"""Batch samplers that put texts of similar length together, so that dynamic padding pads little.

Both take the index sampler as their first argument: under DDP Lightning swaps in a
``DistributedSampler`` there, and each process then groups only its own share of the indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, Sampler


class LengthGroupedBatchSampler(BatchSampler):
    """Random batches of similar length for training.

    The index sampler's random order is cut into pools of ``pool_batches`` batches; each pool is
    sorted by length and cut into batches, and the batches of all pools are shuffled. Which texts
    share a pool stays random every epoch; only the order inside a pool is by length.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        lengths: Sequence[int] = (),
        pool_batches: int = 50,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.pool_batches = pool_batches

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        pool_size = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(indices), pool_size):
            pool = sorted(indices[start : start + pool_size], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        for position in torch.randperm(len(batches)).tolist():
            yield batches[position]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        pool_size = self.batch_size * self.pool_batches
        full_pools, rest = divmod(len(self.sampler), pool_size)
        return full_pools * self.pool_batches + -(-rest // self.batch_size)


class LengthSortedBatchSampler(BatchSampler):
    """Deterministic batches in order of decreasing length, for evaluation and prediction.

    The longest batch comes first, so a batch that does not fit in memory fails at once.
    Consumers restore input order from the ``index`` that every batch carries.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        lengths: Sequence[int] = (),
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths

    def __iter__(self) -> Iterator[list[int]]:
        ordered = sorted(self.sampler, key=lambda i: self.lengths[i], reverse=True)
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
