"""Samplers, collate and the Parquet reader of the training data."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.errors import TbprError
from tasks.data.reader import load_prepared
from tasks.train.batches import IdentityBatchSampler, RandomBatchSampler, class_indices, collate_batch


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 7), min_size=4, max_size=12),
    p=st.integers(2, 4),
    k=st.integers(1, 3),
    seed=st.integers(0, 5),
)
def test_identity_sampler_yields_p_identities_with_k_captions_each(
    counts: list[int], p: int, k: int, seed: int
) -> None:
    pids = np.repeat(np.arange(len(counts)) * 10, counts)  # caption i belongs to person pids[i]
    sampler = IdentityBatchSampler(pids, p, k, seed)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    used: Counter[int] = Counter()
    for batch in batches:
        per_person = Counter(int(pids[i]) for i in batch)
        assert len(per_person) == p and set(per_person.values()) == {k}
        used.update(batch)
    # an identity never gives more captions than it has chunks of K (or one padded chunk)
    for person, count in zip(np.unique(pids), counts, strict=True):
        drawn = sum(n for i, n in used.items() if pids[i] == person)
        assert drawn <= max(k, count - count % k)
    # without padding (every identity has >= K captions) no caption repeats within an epoch
    if min(counts) >= k:
        assert max(used.values(), default=1) == 1


def test_identity_sampler_is_reproducible_per_epoch() -> None:
    pids = np.repeat(np.arange(20), 4)
    sampler = IdentityBatchSampler(pids, 4, 2, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    assert first == list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) != first
    assert list(IdentityBatchSampler(pids, 4, 2, seed=3).__iter__()) != first  # epoch 0 differs too


def test_identity_sampler_needs_p_identities() -> None:
    with pytest.raises(TbprError, match="identities"):
        IdentityBatchSampler(np.array([1, 1, 2, 2]), 3, 2, seed=0)


def test_random_sampler_is_a_permutation_without_the_last_partial_batch() -> None:
    sampler = RandomBatchSampler(10, 3, seed=0)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert len(batches) == len(sampler) == 3 and all(len(b) == 3 for b in batches)
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_collate_trims_words_to_the_longest_caption() -> None:
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    ids = torch.arange(10).reshape(2, 5) * mask
    samples = [(torch.full((3, 4, 2), float(i)), ids[i], mask[i], 7 - i) for i in range(2)]
    batch = collate_batch(samples)
    assert batch.pixels.shape == (2, 3, 4, 2) and batch.pixels[1].eq(1).all()
    assert torch.equal(batch.input_ids, ids[:, :3]) and torch.equal(batch.attention_mask, mask[:, :3])
    assert batch.person_ids.tolist() == [7, 6]


def test_class_indices_map_person_ids_to_0_to_c() -> None:
    distinct, classes = class_indices(np.array([42, 7, 42, 100]))
    assert distinct.tolist() == [7, 42, 100] and classes.tolist() == [1, 0, 1, 2]


def test_load_prepared_splits_and_links_captions_to_images(tiny_data: Path) -> None:
    data = load_prepared(tiny_data)
    assert data.dataset == "tiny"
    for split in data.splits.values():
        images = split.image_ids[split.caption_image]  # the image row of each caption
        assert np.all(split.image_pids[split.caption_image] == split.caption_pids)
        assert len(images) == 2 * len(split.image_ids)
    assert len(np.unique(data.splits["train"].caption_pids)) == 6


def test_load_prepared_names_what_is_missing(tiny_data: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_data, tmp_path / "data")
    (tmp_path / "data" / "captions.parquet").unlink()
    with pytest.raises(TbprError, match="captions"):
        load_prepared(tmp_path / "data")
    with pytest.raises(TbprError, match="split 'nope'"):
        load_prepared(tiny_data, splits=("nope",))


def test_daemonic_processes_decode_in_the_main_process() -> None:
    """A Dask or multiprocessing worker is daemonic and may not start DataLoader workers."""
    import multiprocessing

    from tasks.train.batches import usable_workers

    with multiprocessing.get_context("fork").Pool(1) as pool:  # pool workers are daemonic
        assert pool.apply(usable_workers, (2,)) == 0
    assert usable_workers(2) == 2
