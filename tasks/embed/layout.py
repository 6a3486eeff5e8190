"""The EMB/ folder written by `tasks.embed.encode` and read by scoring and search.

```
EMB/gallery.parquet   image_id, person_id, file_path, embedding fixed_size_list<float32>[D]
EMB/queries.parquet   caption_id, image_id, person_id, text, embedding fixed_size_list<float32>[D]
EMB/image_local.npy   (G, N, D) float16, memory-mappable (N: what the head's `compact_images` keeps);
                      with `local_dtype` "uint8": 8-bit codes beside image_local_ranges.npy (G, N, 2)
                      float16, a lo and step per region (`tasks.core.packed.quantize`)
EMB/text_mask.npy     (Q, L) bool: where each caption's words sit (L: the longest caption, or what
                      `compact_texts` keeps)
EMB/text_local.npy    (W, D) float16: the features of the real words only (W = text_mask's True count),
                      caption after caption; read as (Q, L, D), zeros where the mask is off
                      (`tasks.core.packed`; an earlier release's padded (Q, L, D) file reads as it is);
                      "uint8": codes beside text_local_ranges.npy (W, 2), a lo and step per word
EMB/index_<kind>.faiss  flat / hnsw / ivf (/ ivfpq / fastscan when asked) over the gallery embeddings
EMB/shards/<key>/index_<kind>_<start>-<stop>.faiss  a shard's index, kept by sharded pruned scoring
EMB/embed.json        EmbedInfo: model ref, checkpoint, DATA (`data_dir`) or the image folder
                      (`image_folder`), config, counts, dims, whether the local tokens are stored unit
                      (written last)
```
An EMB of an image folder (`tbpr embed --images FOLDER`, `tasks.embed.folder`) has the same files, with
no queries (Q = 0), `file_path` the path relative to FOLDER, `person_id` -1, and three more:
```
EMB/files.parquet       path, sha256, size, mtime_ns: the embedded files, in gallery row order
EMB/quarantine.parquet  path, sha256, size, mtime_ns, reason: files not embedded, and why
EMB/folder.json         FolderRecord (`tasks.embed.previous`): the folder, the model's weights digest, the precision and device
                        type of its features, what the last embed added, changed, removed, kept and
                        quarantined, and why it re-embedded everything when it did
```
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.core.errors import TbprError
from tasks.core.files import write_json_atomic
from tasks.core.packed import Quantized, open_rows
from tasks.data.check import HASHED, content_hash, source_hash
from tasks.tracking.models import open_checkpoint
from tbpr_models import RetrievalModel
from tbpr_models.checkpoint import is_checkpoint, weights_digest
from tbpr_models.config import build

GALLERY = "gallery.parquet"
QUERIES = "queries.parquet"
IMAGE_LOCAL = "image_local.npy"
TEXT_LOCAL = "text_local.npy"
TEXT_MASK = "text_mask.npy"
EMBED_JSON = "embed.json"
FILES = "files.parquet"  # image-folder EMBs only
FOLDER_QUARANTINE = "quarantine.parquet"
FOLDER_JSON = "folder.json"
SOURCE_SPLIT, SOURCE_FOLDER = "split", "folder"  # EmbedInfo.source


def open_local(emb: Path, name: str, info: EmbedInfo) -> np.ndarray | Quantized:
    """EMB's `name` (IMAGE_LOCAL or TEXT_LOCAL) memory-mapped, as `info.local_dtype` says it is stored."""
    return open_rows(emb / name, info.local_dtype)


def unit_as_stored(unit: bool, local_dtype: str) -> bool:
    """`EmbedInfo.*_local_unit` of tokens the head made unit (`unit`) once stored as `local_dtype`: 8-bit
    tokens are unit only to within their codes, so they are recorded not unit and scoring normalises them."""
    return unit and local_dtype == "float16"


def index_file(emb: Path, kind: str) -> Path:
    """`EMB/index_<kind>.faiss`: the FAISS index of that kind over the gallery embeddings."""
    return emb / f"index_{kind}.faiss"


def shard_index_file(emb: Path, key: str, kind: str, start: int, stop: int) -> Path:
    """`EMB/shards/<key>/index_<kind>_<start>-<stop>.faiss`: the index of gallery rows [start, stop)
    that sharded pruned scoring built, kept for the next scoring of the same shards; `key` names the
    embedding it indexes (`EmbedInfo.embed_id`) and how it was built, so a file kept from another
    embedding (a scoring still running while a re-embed replaced the folder) is never read."""
    return emb / "shards" / key / f"index_{kind}_{start}-{stop}.faiss"


@dataclass(frozen=True)
class EmbedInfo:
    """What `embed.json` records about an EMB folder."""

    model_ref: str  # run id, model URI or checkpoint folder as given
    checkpoint: str  # resolved checkpoint folder
    split: str  # "" for an image folder
    variant: str
    pairwise: bool
    num_images: int  # G
    num_queries: int  # Q
    embed_dim: int  # D
    num_regions: int  # N
    max_length: int  # L
    indexes: tuple[str, ...]
    # the local tokens are stored L2-normalised (`ImageFeatures/TextFeatures.unit_local`: the head's
    # compact_* made them so); absent from an older embed.json: False, scoring normalises as needed
    image_local_unit: bool = False
    text_local_unit: bool = False
    embed_id: str = ""  # random, new at every embed (empty in an older embed.json)
    # how image_local.npy and text_local.npy are stored: "float16", or "uint8" codes with ranges (8-bit
    # locals are within 8-bit error of unit, so `*_local_unit` is False for them and scoring normalises)
    local_dtype: str = "float16"
    source: str = SOURCE_SPLIT  # "split": a DATA split; "folder": an image folder
    # where the gallery's images are, by `source` (the other is ""); an older embed.json's `data` is read
    # into the one its `source` names
    data_dir: str = ""  # a split EMB's DATA folder (images.parquet: contact sheets, the server)
    image_folder: str = ""  # an image-folder EMB's folder (files.parquet's paths are relative to it)
    train_run_id: str | None = None
    dataset: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.json
    # `weights_digest` of the checkpoint when it embedded (empty in an older embed.json: not checked)
    weights_digest: str = ""
    # `tasks.data.check.content_hash` of DATA when it embedded: of its own Parquet bytes (the manifest's
    # source hash in an older embed.json; empty in a still older one: not checked)
    data_hash: str = ""

    def data_folder(self) -> Path:
        """The DATA folder the gallery came from, for its images: the one check of every reader of
        DATA (contact sheets, the server, the external re-ranker). A TbprError naming both hashes when
        DATA was re-prepared or edited since (other images under the same ids would be drawn or scored
        beside these embeddings)."""
        folder = Path(self.data_dir)
        if self.data_hash and all((folder / name).is_file() for name in HASHED):
            try:
                now = content_hash(folder)
            except OSError as exc:
                raise TbprError(
                    f"DATA at {folder} cannot be read ({exc}); the embeddings need its images"
                ) from exc
            # an embed.json written before DATA's own hash was recorded holds the manifest's source hash
            if self.data_hash not in (now, source_hash(folder)):
                raise TbprError(
                    f"DATA at {folder} changed since these embeddings were made (its content is {now}, "
                    f"they were embedded from {self.data_hash}); re-run `tbpr embed` on it"
                )
        return folder

    @property
    def image_source(self) -> Path:
        """Where the gallery's images are read from: DATA (a split EMB) or the image folder."""
        return Path(self.image_folder if self.source == SOURCE_FOLDER else self.data_dir)

    def check_same_data(self, other: EmbedInfo, emb: Path, other_emb: Path) -> None:
        """TbprError naming both folders and hashes when `other` (another model's EMB, e.g. a cascade's
        candidates) was embedded from other DATA content than this one: the same ids and captions over
        re-prepared images would pair one model's candidates with the other's pixels."""
        if self.data_hash and other.data_hash and self.data_hash != other.data_hash:
            raise TbprError(
                f"{emb} and {other_emb} were embedded from different DATA ({self.data_hash} and "
                f"{other.data_hash}: re-prepared or edited in between); re-run `tbpr embed` on the "
                "current DATA for both"
            )

    def check_weights(self) -> None:
        """TbprError when the checkpoint is no longer the one that made these embeddings (retrained or
        replaced at the same path): queries encoded with other weights than the gallery rank nonsense."""
        folder = Path(self.checkpoint)
        if not self.weights_digest or not is_checkpoint(folder):
            return  # an older embed.json; a missing checkpoint is open_checkpoint's error
        now = weights_digest(folder)
        if now != self.weights_digest:
            raise TbprError(
                f"the checkpoint {folder} changed since it made these embeddings (weights {now[:19]}, "
                f"embedded with {self.weights_digest[:19]}); re-run `tbpr embed` with it, or pass the "
                "EMB of the current model"
            )

    def load_model(self, device: torch.device) -> RetrievalModel:
        """The model that wrote this folder, rebuilt from its checkpoint, on `device`, in eval mode; a
        TbprError when the checkpoint's weights changed since (`check_weights`)."""
        self.check_weights()
        return open_checkpoint(Path(self.checkpoint), device=device).eval()

    def write(self, emb: Path) -> Path:
        """Write `embed.json` atomically."""
        return write_json_atomic(emb / EMBED_JSON, dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, emb: Path) -> EmbedInfo:
        """Read `embed.json` of `emb`, or a TbprError saying to run `tbpr embed`."""
        path = emb / EMBED_JSON
        if not emb.is_dir():
            raise TbprError(
                f"no embeddings folder at {emb}; run `tbpr embed DATA --run RUN --out {emb}` (or "
                f"`tbpr embed --images FOLDER --out {emb}`) first"
            )
        if not path.is_file():
            raise TbprError(
                f"{emb} has no {EMBED_JSON} (missing or interrupted embed); run `tbpr embed` again"
            )
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise TypeError(f"it holds a JSON {type(raw).__name__}, not an object")
            if "data" in raw:  # an older embed.json: one `data` for either folder
                folder = raw.pop("data")
                raw.setdefault("image_folder" if raw.get("source") == SOURCE_FOLDER else "data_dir", folder)
            known = {f.name for f in dataclasses.fields(cls)}
            # every field checked against its type (a string "false" would be truthy)
            return build(cls, {key: value for key, value in raw.items() if key in known})
        except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, fields missing
            raise TbprError(f"{path} is damaged ({exc}); run `tbpr embed` again into {emb}") from exc
