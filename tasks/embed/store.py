"""The reader of an EMB folder: a `FeatureSource` (`tbpr_models.scoring`) with the globals in memory
and the local features memory-mapped.

Scoring asks it for globals (small) and for the local features of a block or a candidate list only,
so no (Q, G, L, N) tensor and no whole (G, N, D) float32 copy is ever needed.
Dimension letters: Q queries, G gallery, N regions, L words, D dim.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tasks.core.errors import TbprError
from tasks.core.packed import Quantized, Ragged
from tasks.embed import layout
from tasks.embed.index import load_index
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.scoring import Rows, Shapes


def read_embeddings(path: Path, column: str = "embedding") -> np.ndarray:
    """The fixed_size_list<float32> column of a Parquet file as a (rows, D) float32 array."""
    table = pq.read_table(path, columns=[column])
    array = table.column(column).combine_chunks()
    if not isinstance(array, pa.FixedSizeListArray):
        raise TbprError(
            f"{path}:{column} is {array.type}, expected fixed_size_list<float32>; re-run `tbpr embed`"
        )
    values = np.array(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)  # writable copy
    return values.reshape(len(array), array.type.list_size)  # (rows, D)


def read_rows(parquet: Path, column: str, rows: slice) -> np.ndarray:
    """Rows [start, stop) of one column (an embedding column as (rows, D) float32), streamed batch by
    batch: the file is never read whole."""
    parts, seen = [], 0
    for batch in pq.ParquetFile(parquet).iter_batches(columns=[column], batch_size=65_536):
        lo, hi = max(rows.start - seen, 0), min(rows.stop - seen, batch.num_rows)
        if lo < hi:
            values = batch.column(0).slice(lo, hi - lo)
            if pa.types.is_fixed_size_list(values.type):
                flat = values.flatten().to_numpy(zero_copy_only=False)  # `.values` would ignore the slice
                parts.append(flat.reshape(hi - lo, -1).astype(np.float32, copy=False))
            else:
                parts.append(values.to_numpy(zero_copy_only=False))
        seen += batch.num_rows
        if seen >= rows.stop:
            break
    return np.concatenate(parts) if parts else np.empty((0,), dtype=np.float32)


def _tensor(source: torch.Tensor, rows: Rows, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`source[rows]` as a new `dtype` tensor (float16 on disk, computed in `dtype`: fp16 matmul is very
    slow on CPUs): a slice is one converting copy, a row list one `index_select` (1.2 ms for 6,202 x 8
    x 256 float16 rows, where numpy's fancy indexing took 5.8) and its conversion; a list of
    consecutive rows is read as the slice it is (4.6 ms against 10.6 for those rows in bf16). Never a view."""
    if not isinstance(rows, slice):
        index = np.asarray(rows, dtype=np.int64)
        first = int(index[0]) if len(index) else -1
        if first < 0 or not np.array_equal(index, np.arange(first, first + len(index))):
            return _converted(source.index_select(0, torch.from_numpy(index)), device, dtype)
        rows = slice(first, first + len(index))
    return _converted(source[rows], device, dtype, copy=True)


# float32 elements staged per block of a float16 -> bfloat16 conversion (4 MiB: stays in the cache)
STAGE_ELEMENTS = 2**20


def _converted(
    values: torch.Tensor, device: torch.device, dtype: torch.dtype, copy: bool = False
) -> torch.Tensor:
    """`values` on `device` in `dtype` (a new tensor when `copy`; on an accelerator, float16 -> bfloat16
    after the transfer). On the CPU, float16 -> bfloat16 goes through float32 blocks:
    torch converts between the two half types element by element, and each step through float32 is
    vectorised (6,202 x 8 x 256 values on 2 cores: 1.2 ms against 4.4; the result is the same, as
    float32 holds every float16 exactly)."""
    if not (values.dtype == torch.float16 and dtype == torch.bfloat16):
        return values.to(device=device, dtype=dtype, copy=copy)
    if device.type != "cpu":  # a converting copy to an accelerator converts on the CPU first: not that
        return values.to(device=device).to(dtype)
    out = torch.empty(values.shape, dtype=dtype)
    source, target = values.reshape(-1), out.view(-1)  # a row block of the store is contiguous
    stage = torch.empty(min(STAGE_ELEMENTS, source.numel()), dtype=torch.float32)
    for start in range(0, source.numel(), STAGE_ELEMENTS):
        stop = min(start + STAGE_ELEMENTS, source.numel())
        part = stage[: stop - start]
        part.copy_(source[start:stop])
        target[start:stop].copy_(part)
    return out


def _read_only_view(array: np.ndarray) -> torch.Tensor:
    """A torch view of a read-only (memory-mapped) array, only ever copied from (`_tensor`); torch warns
    that it cannot protect such an array, once per process: silenced here, where nothing writes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def check_arrays(
    emb: Path, info: layout.EmbedInfo, image_local: np.ndarray | Quantized, store: EmbeddingStore
) -> None:
    """TbprError naming the file unless EMB's arrays agree with each other and with embed.json: the
    gallery (G, D) and image_local (G, N, D), the queries (Q, D), text_local (Q, L, D) and text_mask
    (Q, L) bool, G, Q, D and N as recorded. Checked once, when the folder is opened, so a damaged EMB
    is one clear error instead of an IndexError deep in a scorer."""
    G, Q, D = info.num_images, info.num_queries, info.embed_dim
    expected = {
        layout.GALLERY: ((store.rows.stop - store.rows.start, D), store.image_globals().shape),
        layout.IMAGE_LOCAL: ((G, info.num_regions, D), image_local.shape),
        layout.QUERIES: ((Q, D), store.text_globals().shape),
        layout.TEXT_LOCAL: ((Q, store.text_mask.shape[1], D), store.text_local.shape),
    }
    if not 0 <= store.rows.start <= store.rows.stop <= G:
        raise TbprError(f"gallery rows {store.rows.start}-{store.rows.stop} are outside {emb}'s {G} images")
    for name, (want, found) in expected.items():
        if tuple(found) != tuple(want):
            raise TbprError(
                f"{emb / name} has shape {tuple(found)}, but {emb / layout.EMBED_JSON} and the other files "
                f"say {tuple(want)} (G={G} images, Q={Q} queries, D={D}); the folder is damaged or mixed "
                "from two embeds: re-run `tbpr embed` into it"
            )
    if store.text_mask.dtype != np.bool_:
        raise TbprError(
            f"{emb / layout.TEXT_MASK} holds {store.text_mask.dtype}, not bool; re-run `tbpr embed`"
        )


class EmbeddingStore:
    """A `FeatureSource` over an EMB folder: globals loaded, local features memory-mapped.

    `gallery=(start, stop)` opens one shard of the gallery (rows are then shard-local): only its rows
    of the gallery globals are read, streamed from Parquet, so no process holds the whole gallery."""

    def __init__(self, emb: Path, gallery: tuple[int, int] | None = None) -> None:
        self.info = layout.EmbedInfo.read(emb)
        for name in (layout.GALLERY, layout.QUERIES, layout.IMAGE_LOCAL, layout.TEXT_LOCAL, layout.TEXT_MASK):
            if not (emb / name).is_file():
                raise TbprError(f"{emb} lacks {name}; re-run `tbpr embed` into a fresh folder")
        self.emb = emb
        self.rows = slice(*(gallery or (0, self.info.num_images)))
        try:
            if gallery is None:
                self._image_global = read_embeddings(emb / layout.GALLERY)  # (G, D)
            else:
                self._image_global = read_rows(emb / layout.GALLERY, "embedding", self.rows)  # (S, D)
            self._text_global = read_embeddings(emb / layout.QUERIES)  # (Q, D)
            # (G, N, D) float16, or 8-bit codes and their ranges (`layout.EmbedInfo.local_dtype`)
            local = layout.open_local(emb, layout.IMAGE_LOCAL, self.info)
            self.image_local = local[self.rows] if isinstance(local, np.ndarray) else local.take(self.rows)
            self.text_mask = np.load(emb / layout.TEXT_MASK)  # (Q, L) bool
            words = layout.open_local(emb, layout.TEXT_LOCAL, self.info)  # (W, D), the real words
            # (Q, L, D): read as padded; an EMB of an earlier release stored it padded
            self.text_local = words if words.ndim == 3 else _ragged(emb, words, self.text_mask)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise TbprError(f"{emb} is damaged ({exc}); re-run `tbpr embed` into it") from exc
        except TbprError as exc:
            raise TbprError(f"{emb}: {exc}; re-run `tbpr embed` into it") from exc
        arrays = [
            ("image_global", self._image_global),
            ("image_local", self.image_local),
            ("text_global", self._text_global),
            ("text_mask", self.text_mask),
        ]
        self._views = {
            name: _read_only_view(array) for name, array in arrays if isinstance(array, np.ndarray)
        }  # torch views for `_tensor`: no copy until rows are asked for (8-bit locals: decoded per read)
        check_arrays(emb, self.info, local, self)

    def index(self, kind: str) -> faiss.Index:
        """The FAISS index of `kind` that this EMB's embed built; TbprError for a kind it did not build
        (a file left by an older embed would miss images) or one whose size does not match the gallery."""
        if kind not in self.info.indexes:
            built = ", ".join(self.info.indexes) or "none"
            raise TbprError(
                f"{self.emb} has no {kind!r} index (its embed built: {built}); re-run `tbpr embed` with that "
                "index kind, or choose one it built"
            )
        index = load_index(layout.index_file(self.emb, kind))
        if index.ntotal != self.num_images:
            raise TbprError(
                f"{layout.index_file(self.emb, kind)} holds {index.ntotal} images, the gallery {self.num_images}; "
                "re-run `tbpr embed` into this folder"
            )
        return index

    def shapes(self) -> Shapes:
        """Sizes for block and chunk planning: these queries x these gallery rows."""
        return Shapes(
            num_texts=self.num_texts,
            num_images=self.num_images,
            words=self.text_local.shape[1],
            regions=self.image_local.shape[1],
            dim=self._text_global.shape[1],
        )

    @property
    def num_images(self) -> int:
        return len(self._image_global)

    @property
    def num_texts(self) -> int:
        return len(self._text_global)

    def image_globals(self) -> np.ndarray:
        return self._image_global

    def text_globals(self) -> np.ndarray:
        return self._text_global

    def images(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> ImageFeatures:
        return ImageFeatures(
            global_=_tensor(self._views["image_global"], rows, device, dtype),
            local=self._image_local(rows, device, dtype),
            unit_local=self.info.image_local_unit,
        )

    def texts(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> TextFeatures:
        return TextFeatures(
            global_=_tensor(self._views["text_global"], rows, device, dtype),
            local=self._text_local(rows, device, dtype),
            mask=_tensor(self._views["text_mask"], rows, device, torch.bool),
            unit_local=self.info.text_local_unit,
        )

    def _image_local(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (B, N, D) region features of `rows`: float16 converted, or 8-bit codes decoded."""
        if isinstance(self.image_local, np.ndarray):
            return _tensor(self._views["image_local"], rows, device, dtype)
        index = rows if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        return _converted(torch.from_numpy(self.image_local[index]), device, dtype)

    def _text_local(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The padded (B, L, D) word features of `rows`: gathered from the ragged file, then converted."""
        if isinstance(self.text_local, np.ndarray):  # a padded file (an earlier release's EMB)
            return _tensor(_read_only_view(self.text_local), rows, device, dtype)
        return _converted(torch.from_numpy(self.text_local[rows]), device, dtype)

    def gallery_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(image_id (G,), person_id (G,)) int64 of the gallery rows (the shard's), in row order."""
        table = pq.read_table(self.emb / layout.GALLERY, columns=["image_id", "person_id"])
        return _ids(table, "image_id")[self.rows], _ids(table, "person_id")[self.rows]

    def query_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(caption_id (Q,), person_id (Q,)) int64, in row order."""
        table = pq.read_table(self.emb / layout.QUERIES, columns=["caption_id", "person_id"])
        return _ids(table, "caption_id"), _ids(table, "person_id")


def _ragged(emb: Path, words: np.ndarray | Quantized, mask: np.ndarray) -> Ragged:
    try:
        return Ragged(words, mask)
    except TbprError as exc:
        raise TbprError(
            f"{emb / layout.TEXT_LOCAL} does not fit {emb / layout.TEXT_MASK} ({exc}); re-run `tbpr embed` into it"
        ) from exc


def _ids(table: pa.Table, column: str) -> np.ndarray:
    return np.array(table.column(column).to_numpy(), dtype=np.int64)  # a writable copy
