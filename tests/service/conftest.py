"""Fixtures: a tiny catalogue served in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.catalogue.helpers import save_tiny_model, write_gallery
from wildreid.catalogue import Catalogue
from wildreid.data.schema import read_metadata
from wildreid.service import create_app

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt"))


@pytest.fixture
def catalogue_dir(tmp_path: Path, tiny_model: str) -> Path:
    csv = write_gallery(tmp_path / "survey")
    with Catalogue.create(tmp_path / "cat", model=tiny_model) as cat:
        cat.enrol(read_metadata(csv), root=csv.parent)
    return tmp_path / "cat"


@pytest.fixture
def client(catalogue_dir: Path) -> Iterator[TestClient]:
    app = create_app(catalogue_dir, api_key=API_KEY, max_upload_bytes=200_000, max_pixels=1_000_000)
    with TestClient(app) as test_client:
        yield test_client


def auth() -> dict[str, str]:
    return {"X-API-Key": API_KEY}
