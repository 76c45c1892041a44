"""The data order of a run: which images every process trains on at every step, and the loader's view of them."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from casnet_core.data import CityscapesDataset
from casnet_core.training.run import TrainingRun


def epoch_batches(
    num_images: int, *, batch_size: int, accumulation: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[list[int]]]:
    """The micro-batches of one process for every step of an epoch: ``[step][micro_batch] -> image indices``.

    A permutation of the images seeded by (seed, epoch), its first images repeated at the end until
    its length is a multiple of ``world``, is cut into steps of ``batch_size * accumulation * world``
    images (the last step takes what is left). Process ``rank`` takes every ``world``-th image of a
    step from the ``rank``-th one, in micro-batches of up to ``batch_size``. Every process gets the
    same number of micro-batches of the same sizes, and for full steps the images of a step are the
    same whatever the split into processes and micro-batches.
    """
    if num_images < 1:
        raise ValueError("no images")
    order = np.random.default_rng((seed, epoch)).permutation(num_images)
    padded = -(-num_images // world) * world
    order = np.resize(order, padded).tolist()  # np.resize repeats from the start
    per_step = batch_size * accumulation * world
    steps = []
    for start in range(0, padded, per_step):
        mine = order[start : start + per_step][rank::world]
        steps.append([mine[i : i + batch_size] for i in range(0, len(mine), batch_size)])
    return steps


class EpochItems(torch.utils.data.Dataset):
    """The training dataset indexed by (epoch, image index): the epoch, which draws an item's augmentation, travels
    with the index, so one DataLoader (and its workers) serves every epoch."""

    def __init__(self, dataset: CityscapesDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class RunBatches:
    """Batch sampler of a run from step ``start``: every micro-batch of every step, as (epoch, index) lists."""

    def __init__(self, run: TrainingRun, start: int) -> None:
        self.run, self.start = run, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch, micro_batches in run_steps(self.run, self.start):
            for micro in micro_batches:
                yield [(epoch, index) for index in micro]


def run_steps(run: TrainingRun, start: int) -> Iterator[tuple[int, list[list[int]]]]:
    """(epoch, micro-batches of image indices) of each step of this process from step ``start`` to the end."""
    step = start
    while step < run.total_steps:
        epoch, step_in_epoch = divmod(step, run.steps_per_epoch)
        for micro_batches in epoch_batches(len(run.dataset), batch_size=run.batch_size,
                                           accumulation=run.accumulation, world=run.world, rank=run.rank,
                                           seed=run.seed, epoch=epoch)[step_in_epoch:]:
            if step >= run.total_steps:
                return
            yield epoch, micro_batches
            step += 1
