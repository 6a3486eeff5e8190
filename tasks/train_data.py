"""Prepared Parquet -> torch datasets, batch samplers and the collate into `tbpr_models.Batch`.

A training sample is one caption with its image. Images stay encoded (an Arrow binary column, shared
copy-on-write with DataLoader workers) and are decoded by Pillow in the workers. Captions are
tokenised once, padded to `max_length`; the collate trims each batch to its longest caption.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tbpr.errors import TbprError
from tbpr_models.features import Batch

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image_id", "person_id", "split", "image")
CAPTION_COLUMNS = ("caption_id", "image_id", "person_id", "split", "text")
Transform = Callable[[Image.Image], Tensor]  # PIL image -> (3, H, W)
Tokenize = Callable[[list[str]], tuple[Tensor, Tensor]]  # texts -> (B, L) ids, (B, L) mask


@dataclass(frozen=True)
class SplitData:
    """One split: its gallery images (encoded) and its captions, each caption pointing at its image row."""

    name: str
    image_ids: np.ndarray  # (G,) int64
    image_pids: np.ndarray  # (G,) int64
    images: pa.Array  # (G,) encoded image bytes
    caption_ids: np.ndarray  # (Q,) int64
    caption_pids: np.ndarray  # (Q,) int64
    caption_image: np.ndarray  # (Q,) row in `images` of each caption's image
    texts: list[str]  # (Q,)


@dataclass(frozen=True)
class PreparedData:
    path: Path
    dataset: str  # manifest's `dataset` name: the MLflow experiment is tbpr/<dataset>
    splits: dict[str, SplitData]


def load_prepared(data: Path, splits: Sequence[str] = ("train", "val", "test")) -> PreparedData:
    """Read DATA/{images,captions}.parquet and manifest.json; TbprError when something is missing."""
    data = Path(data)
    for name in ("images.parquet", "captions.parquet", "manifest.json"):
        if not (data / name).is_file():
            raise TbprError(f"{data / name} not found; run `tbpr prepare` (or `tbpr synth`) to create DATA")
    manifest = json.loads((data / "manifest.json").read_text())
    dataset = str(manifest.get("dataset") or manifest.get("format") or "")
    if not dataset:
        raise TbprError(f"{data / 'manifest.json'} names no dataset; re-run `tbpr prepare`")
    images = _read(data / "images.parquet", IMAGE_COLUMNS)
    captions = _read(data / "captions.parquet", CAPTION_COLUMNS)
    return PreparedData(data, dataset, {s: _split(images, captions, s) for s in splits})


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    missing = sorted(set(columns) - set(pq.read_schema(path).names))
    if missing:
        raise TbprError(f"{path} lacks columns {missing}; re-run `tbpr prepare` to rewrite DATA")
    return pq.read_table(path, columns=list(columns))


def _split(images: pa.Table, captions: pa.Table, split: str) -> SplitData:
    imgs = images.filter(pc.equal(images["split"], split))
    caps = captions.filter(pc.equal(captions["split"], split))
    if imgs.num_rows == 0 or caps.num_rows == 0:
        raise TbprError(
            f"split {split!r} has {imgs.num_rows} images and {caps.num_rows} captions; re-prepare DATA"
        )
    image_ids = imgs["image_id"].to_numpy().copy()
    row_of = {int(i): row for row, i in enumerate(image_ids)}
    caption_image_ids = caps["image_id"].to_numpy()
    orphans = [int(i) for i in caption_image_ids if int(i) not in row_of]
    if orphans:
        raise TbprError(
            f"{len(orphans)} {split} captions point at missing images (e.g. {orphans[0]}); re-prepare"
        )
    return SplitData(
        name=split,
        image_ids=image_ids,
        image_pids=imgs["person_id"].to_numpy().copy(),
        images=imgs["image"].combine_chunks(),
        caption_ids=caps["caption_id"].to_numpy().copy(),
        caption_pids=caps["person_id"].to_numpy().copy(),
        caption_image=np.array([row_of[int(i)] for i in caption_image_ids], dtype=np.int64),
        texts=caps["text"].to_pylist(),
    )


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class ImageDataset(Dataset[Tensor]):
    """The images of a split, decoded and transformed: item i -> (3, H, W)."""

    def __init__(self, split: SplitData, transform: Transform) -> None:
        self.images = split.images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.transform(decode_image(self.images[index].as_py()))


class CaptionImageDataset(Dataset[tuple[Tensor, Tensor, Tensor, int]]):
    """Training samples: item i -> (pixels (3,H,W), input_ids (L,), mask (L,), class index)."""

    def __init__(
        self, split: SplitData, classes: np.ndarray, tokenize: Tokenize, transform: Transform
    ) -> None:
        self.images = split.images
        self.caption_image = split.caption_image
        self.classes = classes  # (Q,) class index of each caption
        self.input_ids, self.attention_mask = tokenize(split.texts)  # (Q, L) each
        self.transform = transform

    def __len__(self) -> int:
        return len(self.caption_image)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, int]:
        pixels = self.transform(decode_image(self.images[int(self.caption_image[index])].as_py()))
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


def epoch_loader(
    dataset: Dataset[tuple[Tensor, Tensor, Tensor, int]],
    sampler: RandomBatchSampler | IdentityBatchSampler,
    *,
    epoch: int,
    seed: int,
    num_workers: int,
) -> DataLoader[tuple[Tensor, Tensor, Tensor, int]]:
    """The loader of one epoch; its order and worker seeds depend only on (seed, epoch)."""
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=usable_workers(num_workers),
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch),
    )
