"""Training batches gathered and augmented on the device that holds the whole data set as uint8.

At batch 30k a per-image PIL pipeline is the bottleneck, so (like the fast CIFAR trainers) the data set
stays on the accelerator and whole batches are cropped, flipped and normalized there. The loaders are
plain iterables with ``__len__``; the training loader's ``sampler`` has ``set_epoch``, which Lightning calls
before every epoch (``lightning.fabric.utilities.data._set_sampler_epoch``), so each epoch reshuffles.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor]

_PERMUTATION, _AUGMENTATION = 0, 1  # independent random streams


def _stream_seed(*words: int) -> int:
    """A seed hashed from (seed, epoch, ...), so nearby words still give unrelated streams."""
    entropy = [w % 2**64 for w in words]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


class ShardedEpochSampler:
    """The seeded permutation of an epoch and this rank's micro-batches of it.

    Global batch k is ``perm[k*G:(k+1)*G]``; rank r takes its slice ``r*(G//W) .. (r+1)*(G//W)`` and cuts it
    into ``accumulate`` micro-batches in order. The last partial global batch is dropped, so the ranks run
    the same number of steps on disjoint, equal shards. The permutation depends on (seed, epoch) only (all
    ranks must agree on it); the augmentation stream on (seed, epoch, rank). Neither touches the global RNG.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        micro_batch: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch % (world_size * micro_batch):
            raise ValueError(f"global batch {global_batch} is not world {world_size} x micro {micro_batch} x k")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if global_batch > n:
            raise ValueError(f"global batch {global_batch} is larger than the {n} samples")
        self.n, self.global_batch, self.micro_batch = n, global_batch, micro_batch
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.accumulate = global_batch // (world_size * micro_batch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; the epoch's batches are a function of it."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Micro-batches per epoch on this rank."""
        return (self.n // self.global_batch) * self.accumulate

    def permutation(self) -> torch.Tensor:
        """The epoch's order of all n samples, identical on every rank."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(_stream_seed(self.seed, self.epoch, _PERMUTATION))
        return torch.randperm(self.n, generator=g)

    def micro_batches(self) -> torch.Tensor:
        """This rank's sample indices for the epoch, shape (len(self), micro_batch), in training order."""
        steps = self.n // self.global_batch
        shard = self.global_batch // self.world_size
        perm = self.permutation()[: steps * self.global_batch].view(steps, self.world_size, shard)
        return perm[:, self.rank].reshape(len(self), self.micro_batch)

    def generator(self) -> torch.Generator:
        """The (seed, epoch, rank) stream for this rank's augmentation in this epoch (on the CPU, so the
        batches do not depend on the device type)."""
        return torch.Generator().manual_seed(_stream_seed(self.seed, self.epoch, _AUGMENTATION, self.rank))


def random_crop_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Zero-pad a uint8 batch once, cut each sample's window at its own offset, mirror the flipped ones.

    ``shifts`` (B, 2) are window origins in the padded image, in [0, 2*pad] (an offset of shift - pad);
    ``flips`` (B,) is boolean. Vectorized over the batch: one unfold view, one gather, one ``where``.
    """
    b, _, h, w = x.shape
    windows = F.pad(x, (pad, pad, pad, pad)).unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W)
    out = windows[torch.arange(b, device=x.device), :, shifts[:, 0], shifts[:, 1]]
    return torch.where(flips[:, None, None, None], out.flip(3), out)


class _Normalize:
    """(x/255 - mean)/std per channel, on uint8 input, optionally in channels_last memory format."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, channels_last: bool):
        self.shift = 255 * torch.tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.scale = 255 * torch.tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:  # on uint8, so the float copy below inherits the layout for free
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().sub_(self.shift).div_(self.scale)


class DeviceLoader:
    """One rank's training micro-batches ``(x float, y int64)``, gathered from uint8 data on its device."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        sampler: ShardedEpochSampler,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = True,
        pad: int = 4,
        channels_last: bool = False,
    ) -> None:
        self.images, self.labels, self.sampler = images, labels, sampler
        self.augment, self.pad = augment, pad
        self.normalize = _Normalize(mean, std, images.device, channels_last)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        device, mb = self.images.device, self.sampler.micro_batch
        batches = self.sampler.micro_batches()
        if self.augment:  # the whole epoch's crop offsets and flips at once, from the (seed, epoch, rank) stream
            g = self.sampler.generator()
            shifts = torch.randint(0, 2 * self.pad + 1, (batches.numel(), 2), generator=g).to(device)
            flips = (torch.rand(batches.numel(), generator=g) < 0.5).to(device)
        batches = batches.to(device)
        for i, idx in enumerate(batches):
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x, shifts[i * mb : (i + 1) * mb], flips[i * mb : (i + 1) * mb], self.pad)
            yield self.normalize(x), self.labels[idx]


class DeviceEvalLoader:
    """A whole split in fixed order, un-augmented and normalized; the last batch may be smaller."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
    ) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.normalize = _Normalize(mean, std, images.device, channels_last)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.labels), self.batch_size):
            end = start + self.batch_size
            yield self.normalize(self.images[start:end]), self.labels[start:end]
