"""P x K batch sampling for metric learning: P identities, K images of each, per batch.

:class:`PKSampler` is written here rather than taken from pytorch-metric-learning: its
``MPerClassSampler`` draws from numpy's global generator (no ``seed``, no ``set_epoch``, order
not reproducible per epoch), has no ``rank``/``world_size``, samples single-image classes (whose
only "positive" is the image itself), shuffles its label list in place and checks its arguments
with ``assert``. Wrapping it per rank would not keep the P x K structure, so the ~100 lines are
cheaper than the workarounds.

Schedule of an epoch (identical on every rank; each rank keeps its own slice):

* a step takes ``world_size * P`` distinct identities from a queue of shuffled identities (a new
  permutation is appended when the queue runs short; identities still queued are moved to its
  end, so a step never repeats one); rank ``r`` gets identities ``r*P .. r*P + P - 1`` of the
  step. Gathering a step across ranks gives a (world_size*P) x K batch of distinct identities,
  hence of distinct images: no image is on two ranks in the same step.
* an identity with ``n >= K`` images gives ``K`` distinct images, taken in turn from its own
  queue of shuffled images, so over the epoch its images are used about equally often.
* an identity with ``2 <= n < K`` images gives all ``n`` images plus ``K - n`` drawn again with
  replacement (duplicates in the batch: the loss sees fewer distinct positives).
* identities with one image are left out (:attr:`PKSampler.excluded_identities`): they cannot
  form a positive pair.
* with ``groups`` (a clip, encounter or video per image), an identity's ``K`` images are spread
  over as many of its groups as possible: its groups are visited in a random order, one image
  each, round after round, until ``K`` are allocated; each group hands out its share from its
  own queue. Frames of one clip are near-duplicates, and positives taken from one clip teach
  the network the clip (background, light) instead of the animal.

Randomness: ``numpy.random.default_rng([seed, epoch])``, independent of any global generator.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from torch.utils.data import Sampler

from wildreid.errors import ConfigError

__all__ = ["PKSampler"]

logger = logging.getLogger(__name__)

_IntArray = npt.NDArray[np.int64]


class PKSampler(Sampler[int]):
    """Dataset indices in batches of ``p`` identities x ``k`` images (module docstring: details).

    Use with ``DataLoader(batch_size=sampler.batch_size, sampler=sampler)``; call
    :meth:`set_epoch` before each epoch.

    Args:
        labels: the label of every dataset item (its identity as an integer).
        p: identities per batch (per rank).
        k: images per identity, at least 2.
        seed: seed of the schedule; with the epoch it fixes the order.
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of processes; every rank gets the same number of batches.
        batches_per_epoch: batches per rank per epoch; ``None`` covers about every sampled image
            once per epoch across ranks: ``max(1, n_images // (p * k * world_size))``, counting
            the images of identities with at least 2.
        groups: the group of every item (clip, encounter); an identity's ``k`` images come
            from as many different groups as it has. ``None``: no grouping.

    Shapes:
        labels: (N,) integers.
        groups: (N,) hashable values.

    Raises:
        ConfigError: an argument is out of range, or fewer than ``p * world_size`` identities
            have at least 2 images.
    """

    def __init__(
        self,
        labels: Sequence[int] | npt.NDArray[np.integer],
        *,
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
        groups: Sequence[Hashable] | npt.NDArray[Any] | None = None,
    ) -> None:
        super().__init__()
        _check_int("p", p, 1)
        _check_int("k", k, 2)
        _check_int("seed", seed, 0)
        _check_int("world_size", world_size, 1)
        _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ConfigError(f"rank must be below world_size={world_size}, got {rank}")
        if batches_per_epoch is not None:
            _check_int("batches_per_epoch", batches_per_epoch, 1)
        values = np.asarray(labels)
        if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
            raise ConfigError(f"labels must be a 1-D sequence of integers, got {values.dtype}")
        classes, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        eligible = np.flatnonzero(counts >= 2)
        needed = p * world_size
        if len(eligible) < needed:
            per_rank = "" if world_size == 1 else f" x world_size={world_size}"
            raise ConfigError(
                f"P x K sampling needs at least p={p}{per_rank} = {needed} identities with 2 or "
                f"more images, but only {len(eligible)} of {len(classes)} have that; use a "
                f"smaller p (at most {len(eligible) // world_size}) or add images"
            )
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        self._pools: list[_IntArray] = [
            order[starts[c] : starts[c + 1]].astype(np.int64) for c in eligible
        ]
        self._groups: list[list[_IntArray]] | None = None
        if groups is not None:
            if len(groups) != len(values):
                raise ConfigError(
                    f"groups must give one value per item: {len(groups)} for {len(values)} labels"
                )
            codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
            self._groups = [
                [pool[codes[pool] == g] for g in np.unique(codes[pool])] for pool in self._pools
            ]
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.excluded_identities = int((counts == 1).sum())
        """Identities with a single image, never sampled."""
        n_images = sum(len(pool) for pool in self._pools)
        self.batches_per_epoch = batches_per_epoch or max(1, n_images // (p * k * world_size))
        self.epoch = 0
        if self.excluded_identities:
            logger.info(
                "P x K sampling leaves out %d single-image identities", self.excluded_identities
            )

    @property
    def batch_size(self) -> int:
        """Items per batch on one rank: ``p * k``."""
        return self.p * self.k

    @property
    def num_identities(self) -> int:
        """Identities sampled (those with at least 2 images)."""
        return len(self._pools)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose schedule :meth:`__iter__` yields (each epoch has its own)."""
        _check_int("epoch", epoch, 0)
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.schedule()[:, self.rank].reshape(-1).tolist())

    def schedule(self) -> _IntArray:
        """Every rank's batches of this epoch.

        Shapes:
            returns: (batches_per_epoch, world_size, p, k) dataset indices; ``[:, r]`` is what
            rank ``r`` yields, in order.
        """
        rng = np.random.default_rng([self.seed, self.epoch])
        n_steps, per_step = self.batches_per_epoch, self.p * self.world_size
        identities = _Queue(np.arange(len(self._pools)), rng)
        groups = self._groups or [[pool] for pool in self._pools]
        images = [[_Queue(group, rng) for group in split] for split in groups]
        out = np.empty((n_steps, per_step, self.k), dtype=np.int64)
        for step in range(n_steps):
            for slot, identity in enumerate(identities.take(per_step)):
                out[step, slot] = self._draw(images[identity], rng)
        return out.reshape(n_steps, self.world_size, self.p, self.k)

    def _draw(self, groups: list[_Queue], rng: np.random.Generator) -> _IntArray:
        """``k`` images of one identity: distinct if it has ``k``, else all plus repeats;
        spread over its groups (one group: its own queue)."""
        sizes = np.array([len(g.items) for g in groups])
        if sizes.sum() < self.k:
            items = np.concatenate([g.items for g in groups])
            extra = rng.choice(items, size=self.k - len(items), replace=True)
            return np.concatenate([rng.permutation(items), extra])
        if len(groups) == 1:
            return groups[0].take(self.k)
        order = rng.permutation(len(groups))
        shares = np.zeros(len(groups), dtype=np.int64)
        while shares.sum() < self.k:
            for g in order:
                if shares.sum() < self.k and shares[g] < sizes[g]:
                    shares[g] += 1
        return np.concatenate([groups[g].take(int(shares[g])) for g in order if shares[g]])


class _Queue:
    """Items in shuffled rounds; :meth:`take` never returns an item twice (``n <= len(items)``)."""

    def __init__(self, items: _IntArray, rng: np.random.Generator) -> None:
        self.items = items
        self._rng = rng
        self._queue: _IntArray = np.empty(0, dtype=np.int64)

    def take(self, n: int) -> _IntArray:
        if len(self._queue) < n:
            fresh = self._rng.permutation(self.items)
            waiting = np.isin(fresh, self._queue)  # move to the end: no repeat within this take
            self._queue = np.concatenate([self._queue, fresh[~waiting], fresh[waiting]])
        out, self._queue = self._queue[:n], self._queue[n:]
        return out


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
