"""The reader of a DATA folder (`tasks.data.layout`): splits with their images and captions, and the
images of a split as a torch dataset. Training, embedding, search and plots read DATA through it.

Images stay encoded (an Arrow binary column, shared copy-on-write with DataLoader workers) and are
decoded by Pillow where they are used.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from tasks.core.errors import TbprError
from tasks.data.check import open_data
from tasks.data.layout import SPLITS

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
    content_hash: str = ""  # manifest's hash of the annotation and image bytes ("" if it has none)


def load_prepared(data: Path, splits: Sequence[str] = SPLITS) -> PreparedData:
    """Read DATA/{images,captions}.parquet and manifest.json, checked when opened (`tasks.data.check`);
    TbprError naming the file, column or row when something is missing or wrong."""
    data = Path(data)
    manifest, images, captions = open_data(data, IMAGE_COLUMNS, CAPTION_COLUMNS)
    dataset = str(manifest.get("dataset") or manifest.get("format"))
    splits_data = {s: _split(images, captions, s) for s in splits}
    return PreparedData(data, dataset, splits_data, str(manifest.get("content_hash") or ""))


def _split(images: pa.Table, captions: pa.Table, split: str) -> SplitData:
    imgs = images.filter(pc.equal(images["split"], split))
    caps = captions.filter(pc.equal(captions["split"], split))
    if imgs.num_rows == 0 or caps.num_rows == 0:
        raise TbprError(
            f"split {split!r} has {imgs.num_rows} images and {caps.num_rows} captions; re-prepare DATA"
        )
    image_ids = imgs["image_id"].to_numpy().copy()
    # every caption's image is in its split (`tasks.data.check`): its row in `imgs`
    caption_image = pc.index_in(caps["image_id"], value_set=imgs["image_id"].combine_chunks())
    return SplitData(
        name=split,
        image_ids=image_ids,
        image_pids=imgs["person_id"].to_numpy().copy(),
        images=imgs["image"].combine_chunks(),
        caption_ids=caps["caption_id"].to_numpy().copy(),
        caption_pids=caps["person_id"].to_numpy().copy(),
        caption_image=caption_image.to_numpy().astype(np.int64),
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
