"""Fixtures: one tiny model per test session, tiny galleries and catalogues per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalogue.helpers import save_tiny_model, write_gallery
from wildreid.catalogue import Catalogue
from wildreid.data.schema import read_metadata


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt"))


@pytest.fixture
def gallery_csv(tmp_path: Path) -> Path:
    return write_gallery(tmp_path / "survey")


@pytest.fixture
def catalogue(tmp_path: Path, tiny_model: str, gallery_csv: Path) -> Iterator[Catalogue]:
    """A catalogue holding 3 individuals x 2 photos."""
    cat = Catalogue.create(tmp_path / "cat", model=tiny_model)
    cat.enrol(read_metadata(gallery_csv), root=gallery_csv.parent)
    yield cat
    cat.close()
