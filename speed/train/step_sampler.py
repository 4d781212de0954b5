"""Multi-dataset batches that line up across ranks.

The embedding corpus is two datasets (triplets and pairs, speed.train.embedding). The
proportional sampler picks a dataset per batch, and under DDP accelerate deals batch i to rank
i mod N, so in one step rank 0 could hold triplets and rank 1 pairs: the loss gathers the
candidates of every rank column by column, and two ranks with different column counts would
hang in the collective. Here the dataset is drawn per step: N consecutive batches come from the
same dataset, still in proportion to its size. A dataset's last batches that do not fill a step
are left out of that epoch (fewer than N batches per dataset). One rank: the library's own
proportional order.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from typing import Any


def step_aligned_sampler(group: int) -> Any:
    """A ProportionalBatchSampler subclass whose dataset draws hold for `group` batches."""
    import torch
    from sentence_transformers.base.sampler import ProportionalBatchSampler

    class StepAlignedBatchSampler(ProportionalBatchSampler):
        def _steps(self) -> list[int]:
            return [len(s) // group for s in self.batch_samplers]

        def __iter__(self) -> Iterator[list[int]]:
            if self.generator is not None and self.seed is not None:
                self.generator.manual_seed(self.seed + self.epoch)
            offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
            draws = [i for i, steps in enumerate(self._steps()) for _ in range(steps)]
            order = torch.randperm(len(draws), generator=self.generator).tolist()
            batches = [iter(s) for s in self.batch_samplers]
            for pos in order:
                which = draws[pos]
                step = [next(batches[which], None) for _ in range(group)]
                if any(b is None for b in step):
                    return  # the no-duplicates sampler fell short: no step a rank misses
                yield from ([idx + offsets[which] for idx in b] for b in step)

        def __len__(self) -> int:
            return sum(self._steps()) * group

    return StepAlignedBatchSampler


def trainer_class(processes: int) -> Any:
    """SentenceTransformerTrainer, with step-aligned multi-dataset batches on several ranks."""
    from sentence_transformers import SentenceTransformerTrainer

    if processes == 1:
        return SentenceTransformerTrainer
    sampler = step_aligned_sampler(processes)

    class StepAlignedTrainer(SentenceTransformerTrainer):
        def get_multi_dataset_batch_sampler(self, dataset, batch_samplers, generator=None, seed=0):
            return sampler(dataset, batch_samplers=batch_samplers, generator=generator, seed=seed)

    return StepAlignedTrainer
