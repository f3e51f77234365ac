"""The review web UI in-process: sign in once, CSRF on every change, review and decide."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests.service.conftest import API_KEY
from tests.service.test_api import png


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: TestClient) -> str:
    token = csrf(client.get("/").text)
    response = client.post(
        "/ui/login", data={"csrf_token": token, "api_key": API_KEY, "who": "ranger ann"}
    )
    assert response.status_code == 200 and "signed in as" in response.text
    return csrf(response.text)


def test_sign_in_needs_the_key_and_a_valid_csrf_token(client: TestClient) -> None:
    home = client.get("/")
    assert "Sign in" in home.text and "Upload and identify" not in home.text
    token = csrf(home.text)
    wrong = client.post("/ui/login", data={"csrf_token": token, "api_key": "nope", "who": "x"})
    assert wrong.status_code == 401 and "wrong API key" in wrong.text
    forged = client.post("/ui/login", data={"csrf_token": "forged", "api_key": API_KEY, "who": "x"})
    assert forged.status_code == 403 and "CSRF" in forged.text


def test_upload_review_confirm_and_undo(client: TestClient, tmp_path: Path) -> None:
    token = sign_in(client)
    photo = (tmp_path / "survey/photos/ind2/0.png").read_bytes()
    page = client.post(
        "/ui/upload",
        data={"csrf_token": token, "location": "north"},
        files=[("files", ("lion.png", photo, "image/png"))],
    )
    assert page.status_code == 200 and "/ui/queries/" in str(page.url)
    assert "location=north" in page.text and 'data-identity="ind2"' in page.text
    query = str(page.url).rsplit("/", 1)[-1]
    no_csrf = client.post(
        f"/ui/queries/{query}/decide", data={"verdict": "same", "individual_id": "ind2"}
    )
    assert no_csrf.status_code == 422  # the token field is required
    bad_csrf = client.post(
        f"/ui/queries/{query}/decide",
        data={"csrf_token": "x", "verdict": "same", "individual_id": "ind2"},
    )
    assert bad_csrf.status_code == 403
    confirmed = client.post(
        f"/ui/queries/{query}/decide",
        data={"csrf_token": token, "verdict": "same", "individual_id": "ind2"},
    )
    assert confirmed.status_code == 200 and "/ui/individuals/ind2" in str(confirmed.url)
    assert "ranger ann" in confirmed.text and query in confirmed.text
    undone = client.post(f"/ui/queries/{query}/undo", data={"csrf_token": token})
    assert undone.status_code == 200 and "undo" in undone.text
    new = client.post(
        f"/ui/queries/{query}/decide",
        data={"csrf_token": token, "verdict": "new", "name": "Scar"},
    )
    assert new.status_code == 200 and "Scar" in new.text


def test_many_photos_become_a_batch_job(client: TestClient) -> None:
    token = sign_in(client)
    files = [("files", (f"p{i}.png", png(i), "image/png")) for i in range(3)]
    page = client.post("/ui/upload", data={"csrf_token": token}, files=files)
    assert page.status_code == 200 and "/ui/jobs/" in str(page.url)
    assert "Batch" in page.text


def test_pages_render_and_errors_are_pages(client: TestClient) -> None:
    assert "ind0" in client.get("/ui/individuals").text
    page = client.get("/ui/individuals/ind1")
    assert "Sightings" in page.text and "2024-01-11" in page.text
    missing = client.get("/ui/individuals/nobody")
    assert missing.status_code == 404 and "NotFoundError" in missing.text
    assert client.get("/static/review.js").status_code == 200


def test_the_review_page_draws_the_matched_keypoints_when_local_matching_ran(
    client: TestClient, tmp_path: Path
) -> None:
    token = sign_in(client)
    home = client.get("/").text
    assert 'name="rerank"' in home and '<option value="sift"' in home
    photo = (tmp_path / "survey/photos/ind1/1.png").read_bytes()
    page = client.post(
        "/ui/upload",
        data={"csrf_token": token, "rerank": "sift"},
        files=[("files", ("lion.png", photo, "image/png"))],
    )
    assert page.status_code == 200 and "/ui/queries/" in str(page.url)
    assert 'id="rerank-method">sift<' in page.text and "not calibrated" in page.text
    drawings = re.findall(r'<img class="evidence"[^>]* src="([^"]+)"', page.text)
    assert len(drawings) == page.text.count('class="candidate"') >= 1
    query = str(page.url).rsplit("/", 1)[-1]
    assert drawings[0].startswith(f"/api/queries/{query}/evidence/")
    assert drawings[0].endswith("?rerank=sift")
    drawing = client.get(drawings[0])
    assert drawing.status_code == 200 and drawing.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert "inliers</span>" in page.text
    plain = client.post(
        "/ui/upload",
        data={"csrf_token": token, "rerank": "none"},
        files=[("files", ("other.png", png(5), "image/png"))],
    )
    assert 'class="evidence"' not in plain.text and "no keypoints to draw" in plain.text
    bad = client.post(
        "/ui/upload",
        data={"csrf_token": token, "rerank": "surf"},
        files=[("files", ("other.png", png(6), "image/png"))],
    )
    assert bad.status_code == 422 and "not one of" in bad.text
