"""A `cross_fusion` run predicts the word pieces of its training captions: the trainer derives them
from the data, and the run's checkpoint and the registered artefact keep them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tasks.data.reader import load_prepared
from tasks.tracking.config import TrackingConfig
from tasks.tracking.models import resolve_checkpoint
from tasks.train.config import TrainConfig
from tasks.train.loop import train_variant
from tbpr_models import load_checkpoint
from tbpr_models.encoders.text import minilm_path
from tbpr_models.variants.cross_fusion import CrossFusionHead

TinyConfig = Callable[..., TrainConfig]


def test_a_cross_fusion_run_predicts_its_training_captions_word_pieces(
    tiny_data: Path, tiny_config: TinyConfig, tracking_uri: tuple[str, str], tmp_path: Path
) -> None:
    uri, artifacts = tracking_uri
    tracking = TrackingConfig(tracking_uri=uri, artifact_root=artifacts)
    config = tiny_config(tmp_path / "train", variant="cross_fusion", epochs=1)
    result = train_variant(tiny_data, config, tracking=tracking, progress=False)
    # independently: the MiniLM WordPiece ids between [CLS] and [SEP] of every training caption
    backend = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    train = load_prepared(tiny_data).splits["train"]
    expected = sorted({i for text in train.texts for i in backend(text)["input_ids"][1:-1]})
    assert 0 < len(expected) < backend.vocab_size
    for folder in (result.checkpoint_dir, resolve_checkpoint(result.run_id, tracking)[0]):
        model = load_checkpoint(folder)
        assert isinstance(model.head, CrossFusionHead) and model.head.label_words is not None
        assert model.config.label_words == len(expected)
        assert model.head.label_words.tolist() == expected
        assert model.head.mlm_head.decoder.weight.shape == (len(expected), model.config.embed_dim)
        assert torch.isfinite(model.head.mlm_head.decoder.weight).all()
