"""An image folder embedded with the tiny cross_scan checkpoint (a head with word-to-region attention),
shared by the service tests; read-only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.embed.folder_images import write_image_folder


@pytest.fixture(scope="session")
def served_emb(tiny_checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.embed.folder import embed_folder

    root = tmp_path_factory.mktemp("served")
    images = write_image_folder(root / "images")
    embed_folder(images, tiny_checkpoint("cross_scan"), root / "emb", batch_size=4)
    return root / "emb"
