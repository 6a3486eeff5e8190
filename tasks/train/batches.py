"""Training batches: caption-image samples, batch samplers and the collate into `tbpr_models.Batch`.

A training sample is one caption with its image (decoded by Pillow in the DataLoader workers).
Captions are tokenised once, padded to `max_length`; the collate trims each batch to its longest caption.
A sample's augmentation is drawn from (seed, epoch, caption): the same whatever the number of DataLoader
workers or data-parallel processes. Samplers yield global batches; each process takes its share (`shard`).
"""

from __future__ import annotations

import logging
import multiprocessing
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tasks.cache.features import CachedSplit, SplitPoint
from tasks.core.errors import TbprError
from tasks.data.reader import SplitData, Tokenize, decode_image
from tasks.train.distributed import Ranks, shard
from tbpr_models.features import Batch
from tbpr_models.transforms import ImageTransform

log = logging.getLogger(__name__)


class CaptionImageDataset(Dataset[tuple[Tensor, Tensor, Tensor, int]]):
    """Training samples: item i -> (pixels (3,H,W), input_ids (L,), mask (L,), class index)."""

    def __init__(
        self, split: SplitData, classes: np.ndarray, tokenize: Tokenize, transform: ImageTransform
    ) -> None:
        self.images = split.images
        self.caption_image = split.caption_image
        self.classes = classes  # (Q,) class index of each caption
        self.input_ids, self.attention_mask = tokenize(split.texts)  # (Q, L) each
        self.transform = transform
        self.epoch_key = "0/0"  # (seed, epoch) of the augmentation draws, set per epoch

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.epoch_key = f"{seed}/{epoch}"

    def __len__(self) -> int:
        return len(self.caption_image)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, int]:
        image = decode_image(self.images[int(self.caption_image[index])].as_py())
        pixels = self.transform(image, random.Random(f"{self.epoch_key}/{index}"))
        return pixels, self.input_ids[index], self.attention_mask[index], int(self.classes[index])


def class_indices(pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person ids -> (sorted distinct ids (C,), class index in [0, C) of each entry)."""
    distinct, classes = np.unique(pids, return_inverse=True)
    return distinct, classes.astype(np.int64)


def collate_batch(samples: list[tuple[Tensor, Tensor, Tensor, int]]) -> Batch:
    """Stack samples into a Batch, trimming the word axis to the longest caption of the batch."""
    pixels, ids, masks, classes = zip(*samples, strict=True)
    input_ids = torch.stack(ids)  # (B, L)
    mask = torch.stack(masks)  # (B, L)
    length = max(int(mask.sum(dim=1).max()), 1)
    return Batch(
        pixels=torch.stack(pixels),  # (B, 3, H, W)
        input_ids=input_ids[:, :length].contiguous(),  # (B, L')
        attention_mask=mask[:, :length].contiguous(),  # (B, L')
        person_ids=torch.tensor(classes, dtype=torch.long),
    )


class RandomBatchSampler(Sampler[list[int]]):
    """Shuffled batches of `batch_size` (the last incomplete one dropped), reproducible per (seed, epoch)."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if size < batch_size:
            raise TbprError(
                f"{size} training captions are fewer than batch_size {batch_size}; lower batch_size"
            )
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.size)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size].tolist()


class IdentityBatchSampler(Sampler[list[int]]):
    """P identities x K captions per batch (open-reid's RandomIdentitySampler, as batches).

    Each identity's captions are shuffled and cut into chunks of K (an identity with fewer than K
    captions is padded by drawing with replacement; a remainder shorter than K is dropped). Batches
    take one chunk from each of P distinct identities, chosen at random among those with chunks left.
    """

    def __init__(self, pids: np.ndarray, identities_per_batch: int, per_identity: int, seed: int) -> None:
        if identities_per_batch < 2 or per_identity < 1:
            raise TbprError(
                f"the identity sampler needs P = batch_size // captions_per_identity >= 2 identities per "
                f"batch and K >= 1, got P={identities_per_batch}, K={per_identity}; raise batch_size or "
                "lower captions_per_identity"
            )
        self.by_pid = [np.flatnonzero(pids == pid) for pid in np.unique(pids)]
        if len(self.by_pid) < identities_per_batch:
            raise TbprError(
                f"{len(self.by_pid)} training identities are fewer than P={identities_per_batch} per batch; "
                "lower batch_size or raise captions_per_identity"
            )
        self.p, self.k, self.seed, self.epoch = identities_per_batch, per_identity, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        chunks: list[list[list[int]]] = []
        for idxs in self.by_pid:
            idxs = (
                rng.choice(idxs, size=self.k, replace=True) if len(idxs) < self.k else rng.permutation(idxs)
            )
            chunks.append([idxs[i : i + self.k].tolist() for i in range(0, len(idxs) - self.k + 1, self.k)])
        batches: list[list[int]] = []
        available = [i for i, c in enumerate(chunks) if c]
        while len(available) >= self.p:
            chosen = rng.choice(len(available), size=self.p, replace=False)
            batches.append([idx for a in chosen for idx in chunks[available[a]].pop()])
            available = [i for i in available if chunks[i]]
        return batches

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy and random follow the worker's torch seed (base seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def usable_workers(requested: int) -> int:
    """DataLoader worker processes this process may start: none inside a daemonic process (a Dask or
    multiprocessing worker may not have children), else `requested`."""
    if requested and multiprocessing.current_process().daemon:
        log.info("decoding images in the main process: a daemonic worker cannot start DataLoader workers")
        return 0
    return requested


class ShardedBatches(Sampler[list[int]]):
    """This process's share of each global batch of `sampler`."""

    def __init__(self, sampler: RandomBatchSampler | IdentityBatchSampler, ranks: Ranks) -> None:
        self.sampler, self.ranks = sampler, ranks

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for rows in self.sampler:
            yield shard(rows, self.ranks)


def epoch_loader(
    dataset: CaptionImageDataset,
    sampler: RandomBatchSampler | IdentityBatchSampler,
    *,
    epoch: int,
    seed: int,
    num_workers: int,
    ranks: Ranks | None = None,
) -> DataLoader[tuple[Tensor, Tensor, Tensor, int]]:
    """The loader of one epoch (this process's share of each batch); its order and augmentations depend
    only on (seed, epoch)."""
    sampler.set_epoch(epoch)
    dataset.set_epoch(seed, epoch)
    return DataLoader(
        dataset,
        batch_sampler=ShardedBatches(sampler, ranks or Ranks()),
        collate_fn=collate_batch,
        num_workers=usable_workers(num_workers),
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch),
    )


class CachedBatches:
    """Training batches from the feature cache: the sampler's caption rows gathered from the memory-mapped
    activations (each image mirrored with probability 1/2, the cached flip), no decoding, no workers."""

    def __init__(
        self,
        cached: CachedSplit,
        split: SplitData,
        classes: np.ndarray,
        tokenize: Tokenize,
        point: SplitPoint,
    ) -> None:
        self.cached, self.caption_image, self.classes, self.point = (
            cached,
            split.caption_image,
            classes,
            point,
        )
        self.input_ids, self.attention_mask = tokenize(split.texts)  # (Q, L) each

    def epoch(
        self,
        sampler: RandomBatchSampler | IdentityBatchSampler,
        *,
        epoch: int,
        seed: int,
        ranks: Ranks | None = None,
    ) -> Iterator[Batch]:
        """This process's share of each batch; the mirror draws are made for the global batch."""
        sampler.set_epoch(epoch)
        rng = np.random.default_rng((seed, epoch, 1))
        ranks = ranks or Ranks()
        for global_rows in sampler:
            draws = rng.random(len(global_rows)) < 0.5
            mine = shard(list(range(len(global_rows))), ranks)
            rows_array = np.asarray(global_rows)[mine]
            images = self.caption_image[rows_array]
            plain, mirrored = self.cached.images, self.cached.images_flip
            flip = draws[mine] & (mirrored is not None)
            # (B, C, h, w), a copy; each row read (and, from 8-bit codes, decoded) once, plain or mirrored
            acts = np.empty((len(images), *plain.shape[1:]), plain.dtype)
            acts[~flip] = plain[images[~flip]]
            if mirrored is not None and flip.any():
                acts[flip] = mirrored[images[flip]]
            mask = self.attention_mask[rows_array]  # (B, L)
            length = max(int(mask.sum(dim=1).max()), 1)
            hidden = self.cached.texts[rows_array, :length]  # (B, L', C'), zeros past each caption
            yield Batch(
                pixels=torch.from_numpy(acts).float(),  # torch's vectorised fp16 -> fp32, not numpy's loop
                input_ids=self.input_ids[rows_array][:, :length].contiguous(),
                attention_mask=mask[:, :length].contiguous(),
                person_ids=torch.from_numpy(self.classes[rows_array]).long(),
                image_stage=self.point.image,
                text_hidden=torch.from_numpy(_padded(hidden, length)).float(),
                text_stage=self.point.text,
            )


def _padded(hidden: np.ndarray, length: int) -> np.ndarray:
    """(B, L'', C) -> (B, length, C), zero-padding when the cache is narrower than the batch."""
    if hidden.shape[1] >= length:
        return hidden
    return np.pad(hidden, ((0, 0), (0, length - hidden.shape[1]), (0, 0)))
