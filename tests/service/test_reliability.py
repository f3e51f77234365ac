"""Reliability under load, crashes and hostile input (bounded in time, loopback only)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.catalogue.helpers import write_photo
from tests.service.conftest import API_KEY, auth
from tests.service.live import live_server
from tests.service.test_api import png
from wildreid.catalogue import Catalogue
from wildreid.service import create_app


def _state(folder: Path) -> tuple[object, ...]:
    with Catalogue.open(folder) as cat:
        return (
            cat.store.counts(),
            sorted((i.image_id, i.individual_id) for i in cat.store.images()),
            sorted(cat.bundle.stored_files()),
            len(cat.events()),
        )


def test_concurrent_identify_and_enrol_lose_no_write_and_make_no_duplicates(
    catalogue_dir: Path,
) -> None:
    photos = {f"p{i}": png(5000 + i) for i in range(12)}
    jobs: list[tuple[str, str, bytes]] = []
    for i, (name, data) in enumerate(photos.items()):
        individual = f"new{i % 3}"
        jobs.append(("enrol", individual, data))
        jobs.append(("enrol", individual, data))  # the same photo twice, concurrently
        jobs.append(("identify", name, data))
    jobs.extend(("identify", f"x{i}", png(9000 + i)) for i in range(6))

    def call(job: tuple[str, str, bytes]) -> tuple[str, str, dict[str, object]]:
        kind, name, data = job
        url = "/api/identify" if kind == "identify" else f"/api/individuals/{name}/images"
        response = client.post(url, files={"file": (f"{name}.png", data)}, headers=auth())
        assert response.status_code == 200, response.text
        return kind, name, response.json()

    app = create_app(catalogue_dir, api_key=API_KEY)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(call, jobs))
        assert client.get("/health").json()["images"] == 6 + len(photos)

    added = [image_id for kind, _, r in results if kind == "enrol" for image_id in r["added"]]  # type: ignore[attr-defined]
    assert len(added) == len(set(added)) == len(photos)
    with Catalogue.open(catalogue_dir) as cat:
        assert cat.check().ok
        gallery = cat.store.images(role="gallery")
        assert len(gallery) == 6 + len(photos) == cat.index_size
        assert len({i.sha256 for i in gallery}) == len(gallery)  # no photo twice
        for image_id in added:
            assert cat.image(image_id).role == "gallery"
        queries = [r["query_image_id"] for kind, _, r in results if kind == "identify"]
        assert all(cat.store.get_image(str(q)) is not None for q in queries)
        stored = sum(len(cat.store.identifications(str(q))) for q in set(queries))
        assert stored == len(queries)  # every identification recorded


def test_sigkill_during_bulk_enrolment_keeps_every_acknowledged_image(
    tmp_path: Path, tiny_model: str
) -> None:
    folder = tmp_path / "survey"
    rows = []
    for i in range(600):
        write_photo(folder / f"{i}.png", seed=20_000 + i, size=(24, 20))
        rows.append({"image_id": f"b{i}", "identity": f"a{i % 40}", "path": f"{i}.png"})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    cat_dir = tmp_path / "cat"
    Catalogue.create(cat_dir, model=tiny_model).close()
    log = tmp_path / "acknowledged.txt"
    wildreid = Path(sys.executable).parent / "wildreid"
    stderr = (tmp_path / "stderr.txt").open("wb")
    process = subprocess.Popen(
        [
            str(wildreid),
            "catalogue",
            "add",
            str(cat_dir),
            "--metadata",
            str(folder / "metadata.csv"),
            "--chunk-size",
            "2",
            "--committed-log",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        # Generous: on a loaded 2-core machine importing torch and loading the model in the child
        # can take minutes; the kill follows the sixth acknowledgement at once.
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and process.poll() is None:
            if log.exists() and len(log.read_text().split()) >= 6:
                break
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        stderr.close()
    acknowledged = log.read_text().split()
    assert 6 <= len(acknowledged) < 600, (
        "the kill must land in the middle of the enrolment; child stderr: "
        + (tmp_path / "stderr.txt").read_text(errors="replace")[-2000:]
    )
    with Catalogue.open(cat_dir) as cat:
        report = cat.check()
        assert report.ok, report.problems
        for image_id in acknowledged:
            assert cat.image(image_id).individual_id is not None
        assert cat.index_size == cat.store.counts()["images"] >= len(acknowledged)


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buffer, format="PNG")  # 36 Mpx in a few KB
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "status", "message"),
    [
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + os.urandom(300), 422, "ImageReadError"),
        ("truncated.png", png(1, (64, 64))[:200], 422, "ImageReadError"),
        ("notes.txt", b"these are field notes, not a photo", 422, "ImageReadError"),
        ("empty.png", b"", 400, "empty"),
        ("huge.png", b"\x00" * 300_000, 413, "upload limit"),
        ("bomb.png", _bomb(), 422, "pixel"),
        ("../../evil.png", png(2), 400, "not a plain file name"),
        ("..\\evil.png", png(2), 400, "not a plain file name"),
        ("sub/evil.png", png(2), 400, "not a plain file name"),
    ],
)
def test_hostile_uploads_are_refused_and_change_nothing(
    client: TestClient, catalogue_dir: Path, name: str, data: bytes, status: int, message: str
) -> None:
    before = _state(catalogue_dir)
    for url in ("/api/identify", "/api/individuals/ind0/images"):
        response = client.post(url, files={"file": (name, data, "image/png")}, headers=auth())
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "detail"} and message in f"{body['error']} {body['detail']}"
    assert _state(catalogue_dir) == before
    assert not (catalogue_dir.parent / "evil.png").exists()
    assert not list(catalogue_dir.rglob("evil*"))


def test_image_files_cannot_be_read_outside_the_catalogue(client: TestClient) -> None:
    for image_id in ("..%2F..%2Fetc%2Fpasswd", "../catalogue.db", "%2e%2e"):
        response = client.get(f"/api/images/{image_id}/file")
        assert response.status_code == 404
    digest = hashlib.sha256(b"x").hexdigest()
    assert client.get(f"/api/images/{digest}/file").status_code == 404
