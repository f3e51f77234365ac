"""PKSampler: P x K structure, singletons, determinism per epoch, ranks, errors."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from wildreid.errors import ConfigError
from wildreid.training.sampling import PKSampler

# identity i has COUNTS[i] images: two singletons, one identity with fewer than K=4 images
COUNTS = [1, 1, 2, 3, 4, 5, 6, 7, 8, 9]
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
ELIGIBLE = {i for i, n in enumerate(COUNTS) if n >= 2}


def _batches(sampler: PKSampler) -> list[list[int]]:
    indices = list(sampler)
    assert len(indices) == len(sampler)
    size = sampler.batch_size
    assert len(indices) % size == 0
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _check_structure(batch: list[int], p: int, k: int) -> list[int]:
    """Assert the P x K layout; return the batch's identities."""
    labels = LABELS[batch].reshape(p, k)
    assert (labels == labels[:, :1]).all(), labels
    identities = labels[:, 0].tolist()
    assert len(set(identities)) == p
    assert set(identities) <= ELIGIBLE
    for row, identity in zip(np.asarray(batch).reshape(p, k), identities, strict=True):
        distinct = len(set(row.tolist()))
        assert distinct == min(k, COUNTS[identity])  # all images if fewer than k, else k distinct
    return [int(identity) for identity in identities]


def test_every_batch_has_p_distinct_identities_times_k_images() -> None:
    sampler = PKSampler(LABELS, p=3, k=4, seed=1, batches_per_epoch=20)
    batches = _batches(sampler)
    assert len(batches) == 20 and len(sampler) == 20 * 12
    seen = set()
    for batch in batches:
        seen.update(_check_structure(batch, 3, 4))
    assert seen == ELIGIBLE  # singletons never sampled, all others are
    assert sampler.excluded_identities == 2
    assert sampler.num_identities == 8


def test_default_length_covers_the_sampled_images_about_once() -> None:
    labels = np.repeat(np.arange(8), 4)  # 8 identities x 4 images
    sampler = PKSampler(labels, p=2, k=4)
    assert sampler.batches_per_epoch == 32 // 8
    assert sorted(sampler) == list(range(32))  # every image exactly once
    eligible_images = sum(n for n in COUNTS if n >= 2)
    assert PKSampler(LABELS, p=2, k=3).batches_per_epoch == eligible_images // 6
    assert PKSampler(LABELS, p=2, k=3, world_size=2).batches_per_epoch == eligible_images // 12


def test_order_is_deterministic_per_seed_and_epoch_and_changes_across_epochs() -> None:
    a = PKSampler(LABELS, p=2, k=2, seed=5)
    b = PKSampler(LABELS, p=2, k=2, seed=5)
    epoch0 = list(a)
    assert list(b) == epoch0
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0
    b.set_epoch(1)
    assert list(b) == epoch1
    a.set_epoch(0)
    assert list(a) == epoch0
    assert list(PKSampler(LABELS, p=2, k=2, seed=6)) != epoch0


def test_global_rngs_do_not_change_the_order() -> None:
    sampler = PKSampler(LABELS, p=2, k=2, seed=5)
    np.random.seed(1)
    torch.manual_seed(1)
    first = list(sampler)
    np.random.seed(2)
    torch.manual_seed(2)
    assert list(sampler) == first


def test_ranks_get_equal_lengths_and_disjoint_identities_per_step() -> None:
    p, k = 2, 3
    ranks = [PKSampler(LABELS, p=p, k=k, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert len(ranks[0]) == len(ranks[1]) > 0
    np.testing.assert_array_equal(ranks[0].schedule(), ranks[1].schedule())
    per_rank = [_batches(sampler) for sampler in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == ranks[0].batches_per_epoch
    for batch0, batch1 in zip(*per_rank, strict=True):
        identities = _check_structure(batch0, p, k) + _check_structure(batch1, p, k)
        assert len(set(identities)) == 2 * p  # gathered: (world_size * P) x K
        assert not set(batch0) & set(batch1)


def test_loader_batches_keep_the_structure() -> None:
    sampler = PKSampler(LABELS, p=2, k=4, seed=0, batches_per_epoch=3)
    dataset = TensorDataset(torch.as_tensor(LABELS))
    batches = list(DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler))
    assert len(batches) == 3
    for (batch,) in batches:
        labels = batch.view(2, 4)
        assert (labels == labels[:, :1]).all() and labels[0, 0] != labels[1, 0]


def test_small_identities_are_sampled_with_replacement() -> None:
    sampler = PKSampler(LABELS, p=8, k=4, seed=0, batches_per_epoch=1)
    rows = np.asarray(list(sampler)).reshape(8, 4)
    two = next(row for row in rows if LABELS[row[0]] == 2)  # identity 2 has 2 images: rows 2, 3
    assert set(two.tolist()) == {2, 3}
    assert max(Counter(two.tolist()).values()) >= 2


@pytest.mark.parametrize(("p", "world_size", "needed"), [(9, 1, 9), (5, 2, 10)])
def test_too_few_identities_is_a_config_error_suggesting_a_smaller_p(
    p: int, world_size: int, needed: int
) -> None:
    with pytest.raises(ConfigError, match=rf"{needed} identities.* only 8 of 10.*smaller p"):
        PKSampler(LABELS, p=p, k=2, world_size=world_size)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"p": 0, "k": 2}, "p"),
        ({"p": 2, "k": 1}, "k"),
        ({"p": 2, "k": 2, "rank": 2, "world_size": 2}, "rank"),
        ({"p": 2, "k": 2, "world_size": 0}, "world_size"),
        ({"p": 2, "k": 2, "batches_per_epoch": 0}, "batches_per_epoch"),
        ({"p": 2, "k": 2, "seed": -1}, "seed"),
        ({"p": 2.0, "k": 2}, "p"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PKSampler(LABELS, **kwargs)


def test_labels_must_be_integers() -> None:
    with pytest.raises(ConfigError, match="labels"):
        PKSampler(np.array([0.5, 0.5, 1.5, 1.5]), p=1, k=2)


def test_negative_epoch_is_refused() -> None:
    with pytest.raises(ConfigError, match="epoch"):
        PKSampler(LABELS, p=2, k=2).set_epoch(-1)


def _clips(counts_per_clip: list[list[int]]) -> tuple[np.ndarray, list[str]]:
    """Labels and clip names: identity i has clips with counts_per_clip[i] frames."""
    labels, clips = [], []
    for identity, counts in enumerate(counts_per_clip):
        for clip, n in enumerate(counts):
            labels += [identity] * n
            clips += [f"id{identity}-clip{clip}"] * n
    return np.asarray(labels), clips


def test_groups_spread_an_identitys_images_over_its_clips() -> None:
    # identity 0: one long clip and three short ones; 1: two clips; 2: a single clip
    labels, clips = _clips([[20, 1, 1, 1], [10, 3], [6], [5, 5]])
    sampler = PKSampler(labels, p=4, k=4, seed=0, batches_per_epoch=30, groups=clips)
    plain = PKSampler(labels, p=4, k=4, seed=0, batches_per_epoch=30)
    spread_counts, plain_counts = Counter(), Counter()
    for spread_batch, plain_batch in zip(_batches(sampler), _batches(plain), strict=True):
        for batch, counter in ((spread_batch, spread_counts), (plain_batch, plain_counts)):
            rows = np.asarray(batch).reshape(4, 4)
            for row in rows:
                identity = int(labels[row[0]])
                assert (labels[row] == identity).all() and len(set(row.tolist())) == 4
                counter[identity, len({clips[i] for i in row})] += 1
        spread_rows = np.asarray(spread_batch).reshape(4, 4)
        for row in spread_rows:
            distinct_clips = len({clips[i] for i in row})
            expected = {0: 4, 1: 2, 2: 1, 3: 2}[int(labels[row[0]])]
            assert distinct_clips == expected  # as many clips as the identity has, up to k
    # without groups the long clip dominates identity 0's positives
    assert plain_counts[0, 4] < spread_counts[0, 4] == 30


def test_groups_keep_every_image_in_use_and_must_match_the_labels() -> None:
    labels, clips = _clips([[6, 2], [4, 4]])
    sampler = PKSampler(labels, p=2, k=2, seed=3, batches_per_epoch=40, groups=clips)
    used = Counter(i for batch in _batches(sampler) for i in batch)
    assert set(used) == set(range(len(labels)))  # the long clip's frames all take turns
    with pytest.raises(ConfigError, match="one value per item"):
        PKSampler(labels, p=2, k=2, groups=clips[:-1])
