"""The JSON API in-process: health, OpenAPI, identify, jobs, decisions, individuals, errors."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import API_KEY, auth
from wildreid.errors import ConfigError
from wildreid.service import create_app


def png(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def gallery_photo(tmp_path: Path, individual: int, j: int) -> bytes:
    return (tmp_path / f"survey/photos/ind{individual}/{j}.png").read_bytes()


def test_health_and_openapi(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["images"] == 6 and not health["read_only"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/api/identify", "/api/jobs", "/api/queries/{query_id}/decisions"} <= set(
        paths
    )


def test_identify_decide_and_see_the_history(client: TestClient, tmp_path: Path) -> None:
    photo = gallery_photo(tmp_path, 1, 0)
    response = client.post(
        "/api/identify",
        files={"file": ("lion.png", photo, "image/png")},
        data={"location": "south"},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["candidates"][0]["identity"] == "ind1"
    assert result["filters"] == {"location": "south"}
    new = client.post(
        "/api/identify", files={"file": ("q.png", png(77), "image/png")}, headers=auth()
    ).json()
    query = new["query_image_id"]
    decision = client.post(
        f"/api/queries/{query}/decisions",
        json={"verdict": "same", "who": "ann", "individual_id": "ind2", "confidence": 0.7},
        headers=auth(),
    )
    assert decision.status_code == 200, decision.text
    individual = client.get("/api/individuals/ind2").json()
    assert query in [i["image_id"] for i in individual["images"]]
    assert [d["who"] for d in individual["decisions"]] == ["ann"]
    assert any(query in s["image_ids"] for s in individual["sightings"])
    undo = client.post(f"/api/queries/{query}/undo", json={"who": "ann"}, headers=auth())
    assert undo.json()["action"] == "undo"
    assert [d["action"] for d in client.get(f"/api/queries/{query}").json()["decisions"]] == [
        "same",
        "undo",
    ]
    file = client.get(f"/api/images/{query}/file")
    assert file.status_code == 200 and file.content == png(77)


def test_writes_need_the_key_and_reads_do_not(client: TestClient) -> None:
    files = {"file": ("q.png", png(1), "image/png")}
    no_key = client.post("/api/identify", files=files)
    assert no_key.status_code == 401 and "API key" in no_key.json()["detail"]
    wrong = client.post("/api/identify", files=files, headers={"X-API-Key": "nope-nope"})
    assert wrong.status_code == 401
    bearer = client.post(
        "/api/identify", files=files, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert bearer.status_code == 200
    assert client.get("/api/individuals").status_code == 200
    assert (
        client.post("/api/individuals/ind0/rename", json={"name": "A", "who": "x"}).status_code
        == 401
    )


def test_a_server_without_a_key_is_read_only(catalogue_dir: Path) -> None:
    with TestClient(create_app(catalogue_dir)) as client:
        assert client.get("/health").json()["read_only"]
        response = client.post(
            "/api/identify", files={"file": ("q.png", png(1), "image/png")}, headers=auth()
        )
        assert response.status_code == 403 and "read-only" in response.json()["detail"]
    with pytest.raises(ConfigError):
        create_app(catalogue_dir, api_key="short")


def test_errors_map_to_status_codes_with_a_json_body(client: TestClient) -> None:
    missing = client.get("/api/individuals/nobody")
    assert missing.status_code == 404
    assert (
        missing.json()
        == {
            "error": "NotFoundError",
            "detail": missing.json()["detail"],
        }
        and "nobody" in missing.json()["detail"]
    )
    merge = client.post(
        "/api/individuals/ind0/merge", json={"absorb": "ind0", "who": "a"}, headers=auth()
    )
    assert merge.status_code == 422 and merge.json()["error"] == "ConfigError"
    bad = client.post("/api/queries/x/decisions", json={"verdict": "same"}, headers=auth())
    assert bad.status_code == 422 and "who" in bad.json()["detail"]
    assert client.get("/api/jobs/none").status_code == 404


def test_batch_jobs_report_progress_and_interactive_requests_do_not_wait(
    client: TestClient,
) -> None:
    files = [("files", (f"b{i}.png", png(100 + i), "image/png")) for i in range(6)]
    files.append(("files", ("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")))
    started = client.post("/api/jobs", files=files, headers=auth())
    assert started.status_code == 202
    job_id = started.json()["job_id"]
    quick = client.post(
        "/api/identify", files={"file": ("now.png", png(999), "image/png")}, headers=auth()
    )
    assert quick.status_code == 200
    deadline = time.monotonic() + 60
    job = client.get(f"/api/jobs/{job_id}").json()
    while job["status"] != "done" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "done" and job["done"] == job["total"] == 7
    assert [r.get("error") for r in job["results"]][-1] == "ImageReadError"
    assert all("query_image_id" in r for r in job["results"][:6])


def test_enrol_by_upload_adds_a_photo_once(client: TestClient) -> None:
    photo = png(4321)
    first = client.post(
        "/api/individuals/ind5/images",
        files={"file": ("x.png", photo, "image/png")},
        data={"location": "east", "date": "2024-06-01"},
        headers=auth(),
    )
    assert first.status_code == 200, first.text
    second = client.post(
        "/api/individuals/ind5/images",
        files={"file": ("y.png", photo, "image/png")},
        headers=auth(),
    )
    assert second.json()["added"] == [] and len(second.json()["duplicates"]) == 1
    assert len(client.get("/api/individuals/ind5").json()["images"]) == 1


def test_curation_endpoints(client: TestClient) -> None:
    merged = client.post(
        "/api/individuals/ind0/merge", json={"absorb": "ind1", "who": "ann"}, headers=auth()
    )
    assert merged.status_code == 200
    assert len(client.get("/api/individuals/ind0").json()["images"]) == 4
    split = client.post(
        "/api/individuals/ind0/split",
        json={"image_ids": ["g1-0"], "who": "ann", "new_individual_id": "ind8"},
        headers=auth(),
    )
    assert split.status_code == 200
    client.post("/api/individuals/ind8/rename", json={"name": "Eight", "who": "b"}, headers=auth())
    assert client.get("/api/individuals/ind8").json()["individual"]["name"] == "Eight"
    assert client.get("/api/stats").json()["individuals"] == 3


def test_an_interactive_identify_is_not_queued_behind_a_stuck_batch(client: TestClient) -> None:
    import threading

    state = client.app.state.service  # type: ignore[attr-defined]
    release = threading.Event()
    started = threading.Event()

    def slow(name: str, data: bytes) -> dict[str, object]:
        started.set()
        release.wait(60)
        return {"name": name}

    job = state.jobs.submit([("a", b"1"), ("b", b"2")], slow)
    try:
        assert started.wait(30)
        quick = client.post(
            "/api/identify", files={"file": ("now.png", png(31), "image/png")}, headers=auth()
        )
        assert quick.status_code == 200
        assert client.get(f"/api/jobs/{job.job_id}").json()["status"] == "running"
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while state.jobs.get(job.job_id).status != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.jobs.get(job.job_id).to_dict()["done"] == 2


def test_identify_with_local_matching_and_the_drawing_of_its_matches(
    client: TestClient, tmp_path: Path
) -> None:
    photo = gallery_photo(tmp_path, 2, 1)
    response = client.post(
        "/api/identify",
        files={"file": ("lion.png", photo, "image/png")},
        data={"rerank": "sift", "shortlist": "0"},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["reranked"] and result["rerank"]["method"] == "sift"
    assert result["rerank"]["shortlist"] == 0
    best = result["candidates"][0]
    assert best["identity"] == "ind2" and best["n_matches"] is not None
    assert best["n_inliers"] <= best["n_matches"] and best["probability"] is None
    query = result["query_image_id"]
    drawing = client.get(f"/api/queries/{query}/evidence/{best['image_id']}.png")
    assert drawing.status_code == 200 and drawing.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(drawing.content))
    assert picture.height == 240 + 18 and picture.width > picture.height  # side by side
    assert client.get(f"/api/queries/{query}/evidence/nope.png").status_code == 404

    before = client.get("/health").json()
    bad = client.post(
        "/api/identify",
        files={"file": ("lion.png", photo, "image/png")},
        data={"rerank": "surf"},
        headers=auth(),
    )
    assert bad.status_code == 422 and bad.json()["error"] == "ConfigError"
    assert "'surf' is not one of" in bad.json()["detail"] and "sift" in bad.json()["detail"]
    negative = client.post(
        "/api/identify",
        files={"file": ("lion.png", photo, "image/png")},
        data={"rerank": "sift", "shortlist": "-1"},
        headers=auth(),
    )
    assert negative.status_code == 422 and "shortlist" in negative.json()["detail"]
    assert client.get("/health").json() == before  # nothing stored

    plain = client.post(
        "/api/identify", files={"file": ("q.png", png(91), "image/png")}, headers=auth()
    ).json()
    assert not plain["reranked"] and plain["candidates"][0]["n_matches"] is None
    image_id = plain["candidates"][0]["image_id"]
    url = f"/api/queries/{plain['query_image_id']}/evidence/{image_id}.png"
    unranked = client.get(url)
    assert unranked.status_code == 422 and "?rerank=sift" in unranked.json()["detail"]
    assert client.get(url + "?rerank=sift").status_code == 200
    assert client.get(url + "?rerank=surf").status_code == 422
    missing = client.get("/api/calibration")
    assert missing.status_code == 404 and "catalogue calibrate" in missing.json()["detail"]


def test_the_server_default_rerank_applies_unless_a_request_says_none(
    catalogue_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not one of"):
        create_app(catalogue_dir, api_key=API_KEY, rerank="surf")
    app = create_app(catalogue_dir, api_key=API_KEY, rerank="sift", shortlist=3)
    photo = gallery_photo(tmp_path, 0, 1)
    with TestClient(app) as client:
        default = client.post(
            "/api/identify", files={"file": ("a.png", photo, "image/png")}, headers=auth()
        ).json()
        assert default["rerank"]["method"] == "sift" and default["rerank"]["shortlist"] == 3
        none = client.post(
            "/api/identify",
            files={"file": ("a.png", photo, "image/png")},
            data={"rerank": "none"},
            headers=auth(),
        ).json()
        assert not none["reranked"] and none["rerank"] == {}
