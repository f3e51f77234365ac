"""Shared fixtures: tiny generated datasets, no external files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.builders import write_png


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A valid dataset: 3 identities x 2 images plus one unknown; returns the metadata CSV path."""
    rows = []
    for i, identity in enumerate(["ayo", "bisa", "chui", "ayo", "bisa", "chui", "unknown"]):
        path = f"images/{identity}/{i}.png"
        write_png(tmp_path / path, value=i)
        rows.append(
            {
                "image_id": f"img{i}",
                "identity": identity,
                "path": path,
                "species": "lion",
                "viewpoint": "left" if i % 2 else "right",
                "date": f"2024-05-0{i + 1}",
                "encounter": f"enc{i // 2}",
                "bbox": "[1, 1, 10, 8]",
                "landmarks": '{"eye": [3, 4, 2], "ear": [5, 1, 1]}',
                "notes": f"free text {i}, kept",
            }
        )
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    return metadata


@pytest.fixture(autouse=True, scope="session")
def _compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Compiled models go to a session folder, not ~/.cache (shared by the session's tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WILDREID_CACHE_DIR", str(tmp_path_factory.mktemp("wildreid-cache")))
        yield
