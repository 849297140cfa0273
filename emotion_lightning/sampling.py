"""Batch samplers that put texts of similar length together, so that dynamic padding pads little.

Both take the index sampler as their first argument: under DDP Lightning swaps in a
``DistributedSampler`` there, and each process then batches only its own share of the indices.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence, Sized

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler


class SequentialEpochSampler(SequentialSampler):
    """Indices in order, plus the epoch Lightning sets at the start of each, for a batch sampler to shuffle by."""

    def __init__(self, data_source: Sized):
        super().__init__(data_source)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class LengthGroupedBatchSampler(BatchSampler):
    """Random batches of similar length for training, the same for the same ``seed`` and epoch.

    The index sampler's indices are shuffled, cut into pools of ``pool_batches`` batches; each pool
    is sorted by length and cut into batches, and the batches of all pools are shuffled. Which texts
    share a pool stays random every epoch; only the order inside a pool is by length.

    The order depends only on ``seed`` and the epoch, never on the global random state, so that a
    resumed run sees the batches an uninterrupted run would. The epoch is the index sampler's:
    Lightning calls ``set_epoch`` on it (:class:`SequentialEpochSampler`, or under DDP the
    ``DistributedSampler`` Lightning puts in its place).

    Args:
        seed: seed of the shuffling; the same on every process.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        lengths: Sequence[int] = (),
        pool_batches: int = 50,
        seed: int = 0,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.pool_batches = pool_batches
        self.seed = seed
        self._skip_next = 0

    @property
    def epoch(self) -> int:
        return getattr(self.sampler, "epoch", 0)

    def skip_next(self, batches: int) -> None:
        """Leave out the first ``batches`` batches of the next iteration (resuming mid-epoch)."""
        self._skip_next = batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        indices = list(self.sampler)
        indices = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        pool_size = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(indices), pool_size):
            pool = sorted(indices[start : start + pool_size], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        order = torch.randperm(len(batches), generator=generator).tolist()
        skip, self._skip_next = self._skip_next, 0
        for position in order[skip:]:
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

    On several processes each takes every ``world_size``-th of the texts still to do (a stopped prediction's finished
    ones left out first, so that the rest is shared evenly whatever number of processes ran before): every text is in
    exactly one process's batches, none repeated. A process left with no text gets one empty batch, so that it still
    takes part in what the processes compute together at the end (the metrics, the reports).

    Args:
        skip: indices left out (a stopped prediction's finished texts). An argument, not a smaller
            sampler: Lightning rebuilds batch samplers around a sampler of its own for ``predict``.
        rank: this process's place among ``world_size`` (where Lightning put no ``DistributedSampler``, which says
            them itself).
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        lengths: Sequence[int] = (),
        skip: Collection[int] = (),
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.skip = frozenset(skip)
        self.rank, self.world_size = rank, world_size
        if isinstance(sampler, DistributedSampler):
            self.rank, self.world_size = sampler.rank, sampler.num_replicas

    def _indices(self) -> list[int]:
        if isinstance(self.sampler, DistributedSampler):  # its share would repeat texts to even out the processes
            everything: Iterable[int] = range(len(self.sampler.dataset))
        else:
            everything = self.sampler
        left = [index for index in everything if index not in self.skip]
        return left[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        ordered = sorted(self._indices(), key=lambda i: self.lengths[i], reverse=True)
        if not ordered and self.world_size > 1:
            yield []
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        count = len(self._indices())
        if not count and self.world_size > 1:
            return 1
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)


class ResumableDataLoader(DataLoader):
    """A DataLoader that knows how far into its epoch it is; Lightning keeps that in checkpoints.

    ``state_dict()`` says which epoch and how many of its batches were handed out;
    ``load_state_dict()`` makes the next iteration of that epoch start after them, so that a run
    resumed mid-epoch continues with the batch after the last one trained on instead of starting
    the epoch over (:class:`~emotion_lightning.callbacks.ResumeCheckpoint` calls both). Needs a batch
    sampler with ``epoch`` and ``skip_next`` (:class:`LengthGroupedBatchSampler`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch = getattr(self.batch_sampler, "epoch", 0)
        self._batches_done = 0
        self._resume_at: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = (state["epoch"], state["batches_done"])

    def __iter__(self):
        # A generator: the epoch is read at the first batch, after Lightning has called set_epoch.
        self._epoch = epoch = self.batch_sampler.epoch
        resume_epoch, done = self._resume_at or (epoch, 0)
        self._resume_at = None
        self._batches_done = done if resume_epoch == epoch else 0
        self.batch_sampler.skip_next(self._batches_done)
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch
