"""The data order of a training run: a function of the optimizer step alone, identical on every rank.

Epoch ``e`` visits the usable samples (non-empty mask) in the permutation seeded by ``(seed, e)``. Global
micro-batch ``m`` takes positions ``[m * B * W, (m + 1) * B * W)`` of it; process ``r`` reads only the slots
``[r * B, (r + 1) * B)`` of those (``B`` = batch size per process, ``W`` = processes; a trailing partial global batch
is dropped). Random prompt choices are seeded per global micro-batch (``(seed, m)``: box or clicks, number of
corrective clicks) and per sample by its slot in the global batch (``(seed, m, slot)``), so that ``W`` processes of
batch ``B`` see exactly the batches and prompts of one process of batch ``B * W``, and a resumed run those of an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..data.columns import mask_rows


def _has_foreground(sample: Mapping) -> bool:
    return bool(np.asarray(sample["mask"]).any())


def usable_indices(data: Sequence[Mapping], rank: int = 0, world: int = 1) -> list[int]:
    """Indices of the samples whose mask has foreground (a prompt needs one), in increasing order.

    With ``world > 1`` each rank reads the masks of its own share (``rank::world``) and the ranks exchange their
    lists (a collective: every rank must call it). Reads one mask at a time (a ``datasets.Dataset`` is read through
    its ``mask`` column only), so nothing of the size of the dataset is held in memory but the index list.

    Raises:
        ValueError: No sample has a non-empty mask.
    """
    masks = mask_rows(data)
    mine = [i for i in range(rank, len(masks), world) if _has_foreground(masks[i])]
    if world > 1:
        import torch.distributed as dist

        parts: list[list[int] | None] = [None] * world
        dist.all_gather_object(parts, mine)
        mine = sorted(i for part in parts for i in part)
    if not mine:
        raise ValueError("train_data has no sample with a non-empty mask; nothing to train on")
    return mine


class DataOrder:
    """Which samples micro-batch ``m`` of process ``r`` trains on (see the module docstring).

    Args:
        indices: Usable sample indices (:func:`usable_indices`).
        batch_size: Samples per micro-batch and process.
        world: Number of processes.
        seed: Seed of the epoch permutations.

    Raises:
        ValueError: The samples cannot fill one global batch.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, world: int, seed: int) -> None:
        self.indices, self.batch_size, self.world, self.seed = list(indices), batch_size, world, seed
        self.per_epoch = len(self.indices) // (batch_size * world)
        if self.per_epoch == 0:
            raise ValueError(
                f"{len(self.indices)} usable training samples cannot fill one global batch of "
                f"batch_size={batch_size} x {world} processes"
            )
        self._epoch: int | None = None
        self._order: list[int] = []

    def micro_batch(self, micro: int, rank: int) -> tuple[list[int], list[int]]:
        """``(sample indices, slots in the global batch)`` of micro-batch ``micro`` on process ``rank``."""
        epoch, position = divmod(micro, self.per_epoch)
        if self._epoch != epoch:
            permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
            self._epoch, self._order = epoch, [self.indices[i] for i in permutation]
        first_slot = rank * self.batch_size
        start = position * self.batch_size * self.world + first_slot
        return self._order[start : start + self.batch_size], list(range(first_slot, first_slot + self.batch_size))


def prompt_rngs(seed: int, micro: int, slots: Sequence[int]) -> tuple[np.random.Generator, list[np.random.Generator]]:
    """The generator of micro-batch-wide choices and one generator per sample slot."""
    return np.random.default_rng([seed, micro]), [np.random.default_rng([seed, micro, s]) for s in slots]


def mirror_choices(seed: int, micro: int, slots: Sequence[int], probability: float) -> list[bool]:
    """Whether each sample of micro-batch ``micro`` is mirrored left-right, with ``probability`` each.

    Drawn from a generator of its own per sample slot (``(seed, micro, slot, 1)``), so the prompts' generators
    (:func:`prompt_rngs`) draw the same numbers with or without mirroring, and ``W`` processes mirror exactly the
    samples that one process of batch ``B * W`` mirrors. ``probability == 0`` draws nothing.
    """
    if probability <= 0:
        return [False] * len(slots)
    return [bool(np.random.default_rng([seed, micro, s, 1]).random() < probability) for s in slots]


__all__ = ["DataOrder", "mirror_choices", "prompt_rngs", "usable_indices"]
