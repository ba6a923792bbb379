"""The resumable batch sampler: a pure function of (seed, iteration), sharded by rank."""

import itertools

import pytest
import torch

from adapmtl.engine.sampling import EpochIndexed, ResumableBatchSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    sampler = ResumableBatchSampler(10, 5, seed=1)
    batches = take(sampler, 4)
    assert sorted(batches[0] + batches[1]) == list(range(10))
    # keys of epoch 1 are offset by the dataset size
    assert sorted(batches[2] + batches[3]) == list(range(10, 20))
    assert [k - 10 for k in batches[2]] != batches[0]


def test_epoch_indexed_sets_the_epoch_before_reading():
    class Recorder(torch.utils.data.Dataset):
        epoch = 0

        def __len__(self):
            return 10

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            return (self.epoch, index)

    wrapped = EpochIndexed(Recorder())
    assert wrapped[3] == (0, 3)
    assert wrapped[23] == (2, 3)


def test_resuming_at_an_iteration_gives_the_same_batches():
    whole = take(ResumableBatchSampler(12, 4, seed=5), 9)
    resumed = take(ResumableBatchSampler(12, 4, seed=5, start_iteration=4), 5)
    assert resumed == whole[4:]


def test_ranks_split_the_global_batch():
    whole = take(ResumableBatchSampler(12, 4, seed=2), 3)
    rank0 = take(ResumableBatchSampler(12, 4, seed=2, rank=0, world_size=2), 3)
    rank1 = take(ResumableBatchSampler(12, 4, seed=2, rank=1, world_size=2), 3)
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == whole


def test_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableBatchSampler(3, 4, seed=0)
    with pytest.raises(ValueError, match="not divisible"):
        ResumableBatchSampler(12, 3, seed=0, world_size=2)
