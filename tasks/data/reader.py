"""The reader of a DATA folder (`tasks.data.layout`): splits with their images and captions, and the
images of a split as a torch dataset. Training, embedding, search and plots read DATA through it.

Images stay encoded (an Arrow binary column, shared copy-on-write with DataLoader workers) and are
decoded by Pillow where they are used.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from tasks.core.errors import TbprError
from tasks.data.layout import CAPTIONS, IMAGES, MANIFEST, SPLITS

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
    """Read DATA/{images,captions}.parquet and manifest.json; TbprError when something is missing."""
    data = Path(data)
    for name in (IMAGES, CAPTIONS, MANIFEST):
        if not (data / name).is_file():
            raise TbprError(f"{data / name} not found; run `tbpr prepare` (or `tbpr synth`) to create DATA")
    manifest = json.loads((data / MANIFEST).read_text())
    dataset = str(manifest.get("dataset") or manifest.get("format") or "")
    if not dataset:
        raise TbprError(f"{data / MANIFEST} names no dataset; re-run `tbpr prepare`")
    images = _read(data / IMAGES, IMAGE_COLUMNS)
    captions = _read(data / CAPTIONS, CAPTION_COLUMNS)
    splits_data = {s: _split(images, captions, s) for s in splits}
    return PreparedData(data, dataset, splits_data, str(manifest.get("content_hash") or ""))


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
