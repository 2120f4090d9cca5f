"""The sample order: an epoch's permutation from ``(seed, epoch)``, split into this shard's
batches. Pure functions of plain values (no table, no I/O)."""
from __future__ import annotations

import numpy as np


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for non-negative integers, without floats."""
    return -(-int(a) // int(b))


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's sample order: a permutation seeded by ``(seed, epoch)``, or ``arange``."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples)


def shard_batches(order: np.ndarray, rank: int, world: int, batch_size: int,
                  drop_last: bool) -> list[np.ndarray]:
    """Split an epoch order into this shard's batches (sample ids).

    Shards take every ``world``-th sample, so they are disjoint. ``drop_last``: each shard
    gets ``n // world`` samples and drops its last partial batch. Otherwise the order is
    extended cyclically to a multiple of ``world`` (as torch's ``DistributedSampler``), and
    the last batch may be short. All shards get the same number of batches.
    """
    n = len(order)
    if drop_last:
        per = n // world
        mine = order[: per * world][rank::world]
        nb = per // batch_size
        return [mine[i * batch_size:(i + 1) * batch_size] for i in range(nb)]
    per = ceil_div(n, world)
    mine = np.resize(order, per * world)[rank::world] if n else order
    nb = ceil_div(per, batch_size)
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(nb)]


def num_batches(num_samples: int, world: int, batch_size: int, drop_last: bool) -> int:
    """Batches per shard per epoch (the length of `shard_batches`'s list)."""
    if drop_last:
        return (num_samples // world) // batch_size
    return ceil_div(ceil_div(num_samples, world), batch_size)
