"""Tests for wildreid.evaluation.report: files, escaping, examples, unreadable images."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.builders import write_png
from wildreid.errors import ConfigError
from wildreid.evaluation.protocol import EvaluationResult, Protocol, evaluate_embeddings
from wildreid.evaluation.report import THUMB_HEIGHT_PX, choose_examples, write_report
from wildreid.types import Embeddings, EmbeddingSpace

SPACE = EmbeddingSpace(
    model="test", weights_sha256="0" * 64, input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1)
)
EVIL = "<script>alert(1)</script>"


def _dataset(
    root: Path, *, n_identities: int, per_identity: int, n_queries: int, seed: int = 0
) -> tuple[pd.DataFrame, EvaluationResult]:
    """Gallery of ``n_identities x per_identity`` images and ``n_queries`` queries, evaluated.

    Identity 0 is named :data:`EVIL`. Embeddings are noisy copies of one direction per identity,
    so some top-1 matches are right and some wrong.
    """
    rng = np.random.default_rng(seed)
    names = [EVIL, *(f"id{i}" for i in range(1, n_identities))]
    centres = rng.normal(size=(n_identities, 8))
    rows, vectors = [], []
    gallery = [(f"g{i}", i % n_identities) for i in range(n_identities * per_identity)]
    queries = [(f"q{i}", i % n_identities) for i in range(n_queries)]
    for image_id, identity in gallery + queries:
        path = f"images/{image_id}.png"
        write_png(root / path, size=(24, 16), value=len(rows))
        rows.append({"image_id": image_id, "identity": names[identity], "path": path})
        vectors.append(centres[identity] + rng.normal(scale=1.2, size=8))
    metadata = pd.DataFrame(rows)
    array = np.asarray(vectors, dtype=np.float32)
    array /= np.linalg.norm(array, axis=1, keepdims=True)
    embeddings = Embeddings(array, tuple(metadata["image_id"]), SPACE)
    protocol = Protocol(
        tuple(q for q, _ in queries), tuple(g for g, _ in gallery), "test", "gallery"
    )
    return metadata, evaluate_embeddings(metadata, protocol, embeddings)


def _blocks(html: str) -> list[str]:
    return html.split('<section class="example">')[1:]


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def test_report_files_metrics_and_examples(tmp_path: Path) -> None:
    metadata, result = _dataset(tmp_path, n_identities=4, per_identity=3, n_queries=30)
    out = tmp_path / "report"
    files = write_report(
        result,
        metadata=metadata,
        root=tmp_path,
        out_dir=out,
        title="Test run",
        config={"model": "test", "split": "split.csv", "exclude_same": ["encounter"]},
        n_examples=7,
        seed=3,
    )
    assert files.metrics_json == out / "metrics.json"
    assert sorted(p.name for p in out.iterdir()) == ["cmc.png", "metrics.json", "report.html"]
    document = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    assert document["metrics"] == result.metrics
    assert document["config"] == {
        "model": "test",
        "split": "split.csv",
        "exclude_same": ["encounter"],
    }
    assert document["counts"]["n_queries"] == 30
    assert document["counts"]["n_gallery"] == 12
    html = files.report_html.read_text(encoding="utf-8")
    for key in ("top1", "top5", "mAP", "mINP"):
        assert f"{100 * result.metrics[key]:.1f}%" in html
    assert '<td class="value">30</td>' in html
    blocks = _blocks(html)
    assert len(blocks) == 7
    for block in blocks:
        assert block.count('class="tile query"') == 1
        assert block.count('class="tile match ') == 5
    # Every picture is embedded: the page is self-contained.
    sources = re.findall(r'<img[^>]* src="([^"]*)"', html)
    assert len(sources) == 1 + 7 * 6
    assert all(source.startswith("data:image/") for source in sources)
    with Image.open(files.cmc_png) as cmc:
        assert cmc.format == "PNG"


def test_match_frames_follow_identity(tmp_path: Path) -> None:
    metadata, result = _dataset(tmp_path, n_identities=4, per_identity=3, n_queries=12)
    files = write_report(
        result, metadata=metadata, root=tmp_path, out_dir=tmp_path, title="t", config={}
    )
    html = files.report_html.read_text(encoding="utf-8")
    labels = dict(zip(metadata["image_id"], metadata["identity"], strict=True))
    seen = set()
    for block in _blocks(html):
        query = re.search(r'alt="query ([^"]+)"', block)
        assert query is not None
        for kind, gallery_id in re.findall(
            r'class="tile match (correct|wrong)">\s*<img src="[^"]*" alt="gallery ([^"]+)"',
            block,
        ):
            same = labels[gallery_id] == labels[query.group(1)]
            assert kind == ("correct" if same else "wrong")
            seen.add(kind)
    assert seen == {"correct", "wrong"}
    # The CSS gives correct matches a green frame and wrong ones a red frame.
    assert re.search(r"\.tile\.correct img \{ border-color: #00a000; \}", html)
    assert re.search(r"\.tile\.wrong img \{ border-color: #d20000; \}", html)


def test_every_string_is_escaped(tmp_path: Path) -> None:
    metadata, result = _dataset(tmp_path, n_identities=3, per_identity=2, n_queries=6)
    files = write_report(
        result,
        metadata=metadata,
        root=tmp_path,
        out_dir=tmp_path,
        title=f"title {EVIL}",
        config={"model": EVIL, EVIL: 1},
        n_examples=6,
    )
    html = files.report_html.read_text(encoding="utf-8")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The evil identity is shown (queries q0 and q3 have it), escaped.
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5


def test_small_gallery_shows_fewer_matches(tmp_path: Path) -> None:
    metadata, result = _dataset(tmp_path, n_identities=3, per_identity=1, n_queries=5)
    files = write_report(
        result, metadata=metadata, root=tmp_path, out_dir=tmp_path, title="t", config={}
    )
    blocks = _blocks(files.report_html.read_text(encoding="utf-8"))
    assert len(blocks) == 5  # fewer queries than n_examples: all of them
    assert all(block.count('class="tile match ') == 3 for block in blocks)


def test_unreadable_image_becomes_a_placeholder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metadata, result = _dataset(tmp_path, n_identities=2, per_identity=2, n_queries=4)
    (tmp_path / "images" / "g1.png").write_bytes(b"this is not an image")
    with caplog.at_level(logging.WARNING, logger="wildreid.evaluation.report"):
        files = write_report(
            result, metadata=metadata, root=tmp_path, out_dir=tmp_path, title="t", config={}
        )
    assert any("'g1'" in record.getMessage() for record in caplog.records)
    html = files.report_html.read_text(encoding="utf-8")
    placeholder = re.search(r'<img src="([^"]+)" alt="gallery g1">', html)
    readable = re.search(r'<img src="([^"]+)" alt="gallery g0">', html)
    assert placeholder is not None and readable is not None
    grey = np.asarray(_decode(placeholder.group(1))).astype(int)
    assert grey.shape[0] == THUMB_HEIGHT_PX
    assert np.abs(grey[3, 3] - 160).max() <= 6  # the grey placeholder background
    assert np.count_nonzero(grey.max(axis=2) < 90) > 20  # with its "unreadable" text
    thumb = np.asarray(_decode(readable.group(1))).astype(int)
    assert thumb.shape[0] == THUMB_HEIGHT_PX
    assert thumb.std() > 30  # the random test image, not a grey tile


def test_invalid_arguments(tmp_path: Path) -> None:
    metadata, result = _dataset(tmp_path, n_identities=2, per_identity=2, n_queries=4)
    with pytest.raises(ConfigError, match="n_examples must be >= 0"):
        write_report(
            result,
            metadata=metadata,
            root=tmp_path,
            out_dir=tmp_path / "out",
            title="t",
            config={},
            n_examples=-1,
        )
    with pytest.raises(ConfigError, match="NaN or infinity"):
        write_report(
            result,
            metadata=metadata,
            root=tmp_path,
            out_dir=tmp_path / "out",
            title="t",
            config={"threshold": float("nan")},
        )
    assert not (tmp_path / "out").exists()


def _result_with_outcomes(outcomes: str) -> EvaluationResult:
    """A result whose query ``i`` is wrong (``w``), correct (``c``) or new (``n``)."""
    gallery_labels = ("a", "b")
    query_labels = tuple("x" if o == "n" else "a" for o in outcomes)
    ranking = np.array([[1, 0] if o == "w" else [0, 1] for o in outcomes], dtype=np.intp)
    n = len(outcomes)
    return EvaluationResult(
        metrics={},
        query_ids=tuple(f"q{i}" for i in range(n)),
        gallery_ids=("g0", "g1"),
        query_labels=query_labels,
        gallery_labels=gallery_labels,
        scores=np.zeros((n, 2), dtype=np.float32),
        ranking=ranking,
        cmc=np.ones(2),
        known=np.array([o != "n" for o in outcomes]),
        excluded_pairs=0,
    )


@pytest.mark.parametrize(
    ("n_examples", "expected"),
    [
        # Half (rounded up) wrong; the rest split between correct and new (correct gets more).
        (6, "wwwccn"),
        (5, "wwwcn"),
        # Only 3 wrong queries: their missing 2 go to the correct ones.
        (10, "wwwcccccnn"),
        (1, "w"),
        (0, ""),
        (99, "wwwcccccnn"),  # every query, at most
    ],
)
def test_examples_put_failures_first(n_examples: int, expected: str) -> None:
    outcomes = "cwncccwnwc"  # 3 wrong, 5 correct, 2 new
    chosen = choose_examples(_result_with_outcomes(outcomes), n_examples, seed=1)
    assert "".join(outcomes[i] for i in chosen) == expected
    assert len(set(chosen)) == len(chosen)


def test_examples_without_new_queries_are_half_failures() -> None:
    outcomes = "w" * 10 + "c" * 10
    chosen = choose_examples(_result_with_outcomes(outcomes), 7, seed=0)
    assert "".join(outcomes[i] for i in chosen) == "wwwwccc"
    assert chosen[:4] == sorted(chosen[:4])  # each pool in query order


def test_examples_are_deterministic_and_depend_on_the_seed() -> None:
    result = _result_with_outcomes("w" * 20 + "c" * 20)
    assert choose_examples(result, 6, seed=5) == choose_examples(result, 6, seed=5)
    picks = {tuple(choose_examples(result, 6, seed=seed)) for seed in range(10)}
    assert len(picks) > 1
