"""The feature cache against direct encoding, its key, its reuse, and training on it against training
end to end with the same frozen encoders (`prepared_data`: 16 synthetic identities, all three splits)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.cache.features import CACHE_MANIFEST, build_cache, open_cache, split_point
from tasks.core.errors import TbprError
from tasks.data.reader import PreparedData, load_prepared
from tasks.train.batches import CachedBatches, RandomBatchSampler, class_indices
from tbpr_models import (
    Batch,
    ImageTransform,
    RetrievalModel,
    build_model,
    build_tokenizer,
    model_config_from_dict,
)

# resnet_small has 3 stages with these widths (stem, 2 blocks); MiniLM has 7 (embeddings, 6 layers)
MODEL = {
    "embed_dim": 16,
    "image": {"kind": "resnet_small", "height": 64, "width": 32, "widths": [8, 16]},
    "text": {"kind": "minilm", "max_length": 16},
}


def tiny_model(image: dict[str, object], text: dict[str, object], num_classes: int = 0) -> RetrievalModel:
    torch.manual_seed(0)
    config = model_config_from_dict(
        {
            **MODEL,
            "num_classes": num_classes,
            "variant": {"kind": "global"},
            "image": {**MODEL["image"], **image},  # type: ignore[dict-item]
            "text": {**MODEL["text"], **text},  # type: ignore[dict-item]
        }
    )
    return build_model(config).eval()


@pytest.fixture(scope="module")
def data(prepared_data: Path) -> PreparedData:
    return load_prepared(prepared_data)


def test_cache_equals_direct_encoding_within_float16(data: PreparedData, tmp_path: Path) -> None:
    model = tiny_model({"freeze_stages": 2}, {"freeze_layers": 3})
    tokenize = build_tokenizer(model.config.text)
    cache = build_cache(data, model, tokenize, root=tmp_path, batch_size=7, progress=False)
    assert cache.point == split_point(model) and (cache.point.image, cache.point.text) == (2, 4)
    transform = ImageTransform(64, 32, train=False)
    for name, split in data.splits.items():
        cached = cache.splits[name]
        assert np.array_equal(cached.image_ids, split.image_ids)
        assert np.array_equal(cached.caption_ids, split.caption_ids)
        pixels = torch.stack([transform(_image(split, i)) for i in range(len(split.image_ids))])
        with torch.no_grad():
            direct = model.image_encoder.run(pixels, 0, 2).numpy()  # (G, C, h, w)
            mirrored = model.image_encoder.run(pixels.flip(-1), 0, 2).numpy()
            ids, mask = tokenize(split.texts)
            hidden = model.text_encoder.hidden(ids, mask, 4).numpy()  # (Q, L, C)
        assert cached.images.dtype == np.float16
        np.testing.assert_allclose(cached.images, direct, rtol=2e-3, atol=2e-3)
        if name != "train":  # only training mirrors its images (the augmentation)
            assert cached.images_flip is None and not (cache.path / name / "images_flip.npy").exists()
            continue
        assert cached.images_flip is not None
        np.testing.assert_allclose(cached.images_flip, mirrored, rtol=2e-3, atol=2e-3)
        assert not np.allclose(cached.images, cached.images_flip, atol=1e-2)  # the mirror is a mirror
        width = cached.texts.shape[1]
        real = mask[:, :width].bool().numpy()
        texts = np.asarray(cached.texts)  # (Q, width, C) read back from the ragged file
        np.testing.assert_allclose(texts[real], hidden[:, :width][real], rtol=2e-3, atol=5e-3)
        assert not texts[~real].any()  # past a caption's end: zeros, not stored
        stored = np.load(cache.path / name / "texts.npy", mmap_mode="r")
        assert stored.shape == (int(mask.sum()), hidden.shape[2])  # one row per real token, no padding


def test_an_8bit_cache_is_within_half_a_step_of_direct_encoding(data: PreparedData, tmp_path: Path) -> None:
    model = tiny_model({"freeze": True}, {"freeze_layers": 6})
    tokenize = build_tokenizer(model.config.text)
    exact = build_cache(data, model, tokenize, root=tmp_path, progress=False)
    small = build_cache(data, model, tokenize, root=tmp_path, progress=False, dtype="uint8")
    assert small.key != exact.key
    transform = ImageTransform(64, 32, train=False)
    for name, split in data.splits.items():
        pixels = torch.stack([transform(_image(split, i)) for i in range(len(split.image_ids))])
        with torch.no_grad():
            direct = model.image_encoder.run(pixels, 0, small.point.image).numpy()  # (G, C, h, w)
        span = direct.max(axis=(2, 3)) - direct.min(axis=(2, 3))  # per image and channel
        error = np.abs(np.asarray(small.splits[name].images) - direct).max(axis=(2, 3))
        assert (error <= span / 510 + 1e-4).all()
        assert error.max() > np.abs(np.asarray(exact.splits[name].images, np.float32) - direct).max()
        # each word within half a step of its own range (over its channels) of the float16 cache's word
        mask = np.load(exact.path / name / "text_mask.npy")
        words = np.asarray(exact.splits[name].texts, np.float32)[mask]  # (W, C') the real words
        span = words.max(axis=1) - words.min(axis=1)  # per word
        error = np.abs(np.asarray(small.splits[name].texts)[mask] - words)  # (W, C')
        assert (error <= (span / 510)[:, None] * 1.001 + np.abs(words) / 1000 + 1e-6).all()
        assert error.max() > 0 and not np.asarray(small.splits[name].texts)[~mask].any()
        for array in ("images", "texts"):
            codes = np.load(small.path / name / f"{array}.npy", mmap_mode="r")
            assert (
                codes.dtype == np.uint8
                and codes.nbytes * 2 == np.load(exact.path / name / f"{array}.npy").nbytes
            )
    assert small.splits["train"].images_flip is not None
    with pytest.raises(TbprError, match="cache dtype 'int4'"):
        build_cache(data, model, tokenize, root=tmp_path, progress=False, dtype="int4")


def _image(split: object, index: int) -> object:
    from tasks.data.reader import decode_image

    return decode_image(split.images[index].as_py())  # type: ignore[attr-defined]


def test_a_rerun_reuses_the_cache_and_new_weights_get_a_new_one(data: PreparedData, tmp_path: Path) -> None:
    model = tiny_model({"freeze": True}, {"freeze_layers": 6})
    tokenize = build_tokenizer(model.config.text)
    first = build_cache(data, model, tokenize, root=tmp_path, progress=False)
    stamp = (first.path / "train" / "images.npy").stat().st_mtime_ns
    again = build_cache(data, model, tokenize, root=tmp_path, progress=False)
    assert again.path == first.path and (again.path / "train" / "images.npy").stat().st_mtime_ns == stamp
    with torch.no_grad():
        next(model.image_encoder.parameters()).add_(0.5)  # a fine-tuned backbone is another cache
    other = build_cache(data, model, tokenize, root=tmp_path, progress=False)
    assert other.key != first.key
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.key, other.key])  # no staging left


def test_a_higher_cut_is_built_from_a_lower_cache(data: PreparedData, tmp_path: Path) -> None:
    lower_model = tiny_model({"freeze_stages": 1}, {"freeze_layers": 3})
    tokenize = build_tokenizer(lower_model.config.text)
    lower = build_cache(data, lower_model, tokenize, root=tmp_path, progress=False)
    upper_model = tiny_model({"freeze": True}, {"freeze_layers": 6})  # same weights (seeded), frozen higher
    upper = build_cache(data, upper_model, tokenize, root=tmp_path, progress=False)
    assert json.loads((upper.path / CACHE_MANIFEST).read_text())["from"] == lower.key
    direct = build_cache(data, upper_model, tokenize, root=tmp_path / "direct", progress=False)
    assert direct.key == upper.key
    for name in data.splits:
        np.testing.assert_allclose(
            upper.splits[name].images, direct.splits[name].images, rtol=1e-2, atol=1e-2
        )
        np.testing.assert_allclose(upper.splits[name].texts, direct.splits[name].texts, rtol=1e-2, atol=2e-2)


def test_cached_training_takes_the_same_steps_to_the_same_loss(data: PreparedData, tmp_path: Path) -> None:
    """Frozen encoders: steps on cached activations equal steps on pixels and words (same samples,
    no augmentation, fp32), loss by loss and weight by weight."""
    train = data.splits["train"]
    _, classes = class_indices(train.caption_pids)
    model = tiny_model({"freeze": True}, {"freeze_layers": 6}, num_classes=int(classes.max()) + 1)
    tokenize = build_tokenizer(model.config.text)
    cache = build_cache(data, model, tokenize, root=tmp_path, progress=False)
    cached_model, raw_model = model, copy.deepcopy(model)
    source = CachedBatches(cache.splits["train"], train, classes, tokenize, cache.point)
    transform = ImageTransform(64, 32, train=False)
    sampler = RandomBatchSampler(len(classes), 6, seed=0)
    cached_losses, raw_losses = [], []
    for model_, losses in ((cached_model, cached_losses), (raw_model, raw_losses)):
        model_.train()
        optimizer = torch.optim.SGD([p for p in model_.parameters() if p.requires_grad], lr=0.1)
        for step, rows in enumerate(sampler):
            if step == 3:
                break
            batch = (
                _cached_batch(source, rows)
                if model_ is cached_model
                else _raw_batch(train, rows, classes, tokenize, transform)
            )
            total = sum(model_.losses(batch).values())
            optimizer.zero_grad()
            total.backward()  # type: ignore[union-attr]
            optimizer.step()
            losses.append(float(total.detach()))  # type: ignore[union-attr]
    assert cached_losses == pytest.approx(raw_losses, rel=1e-3)
    assert cached_losses[0] != pytest.approx(cached_losses[-1], rel=1e-4)  # the steps did train
    for (name, a), b in zip(cached_model.named_parameters(), raw_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-4, msg=name)


def _cached_batch(source: CachedBatches, rows: list[int]) -> Batch:
    """The cached batch of `rows` without the random mirror."""
    cached = source.cached
    index = np.asarray(rows)
    mask = source.attention_mask[index]
    length = int(mask.sum(dim=1).max())
    return Batch(
        pixels=torch.from_numpy(cached.images[source.caption_image[index]].astype(np.float32)),
        input_ids=source.input_ids[index][:, :length],
        attention_mask=mask[:, :length],
        person_ids=torch.from_numpy(source.classes[index]),
        image_stage=source.point.image,
        text_hidden=torch.from_numpy(cached.texts[index][:, :length].astype(np.float32)),
        text_stage=source.point.text,
    )


def _raw_batch(
    train: object, rows: list[int], classes: np.ndarray, tokenize: object, transform: object
) -> Batch:
    index = np.asarray(rows)
    images = train.caption_image[index]  # type: ignore[attr-defined]
    ids, mask = tokenize([train.texts[i] for i in rows])  # type: ignore[attr-defined,operator]
    length = int(mask.sum(dim=1).max())
    return Batch(
        pixels=torch.stack([transform(_image(train, int(i))) for i in images]),  # type: ignore[operator]
        input_ids=ids[:, :length],
        attention_mask=mask[:, :length],
        person_ids=torch.from_numpy(classes[index]),
    )


def test_a_model_without_frozen_stages_cannot_be_cached(data: PreparedData, tmp_path: Path) -> None:
    model = tiny_model({}, {"freeze_layers": 3})
    with pytest.raises(TbprError, match="frozen lower stages"):
        build_cache(data, model, build_tokenizer(model.config.text), root=tmp_path, progress=False)


def test_a_damaged_cache_is_a_clear_error(data: PreparedData, tmp_path: Path) -> None:
    model = tiny_model({"freeze": True}, {"freeze_layers": 6})
    cache = build_cache(data, model, build_tokenizer(model.config.text), root=tmp_path, progress=False)
    (cache.path / "val" / "texts.npy").write_bytes(b"not numpy")
    with pytest.raises(TbprError, match="damaged"):
        open_cache(cache.path)


@pytest.mark.parametrize(
    "manifest",
    [
        [1],
        {"splits": [], "point": {"image": 1, "text": 1}},
        {"splits": [], "key": "k", "point": {"image": "a", "text": 1}},
    ],
)
def test_a_cache_json_of_the_wrong_shape_is_a_clear_error(manifest: object, tmp_path: Path) -> None:
    (tmp_path / CACHE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TbprError, match="damaged"):
        open_cache(tmp_path)
