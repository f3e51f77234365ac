import numpy as np
import pytest

from wildreid.errors import ConfigError, EmbeddingSpaceError
from wildreid.types import Candidate, Embeddings, EmbeddingSpace, Identification

SPACE = EmbeddingSpace(
    model="m",
    weights_sha256="ab" * 32,
    input_size=(224, 224),
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
    dim=2,
)


def test_space_json_round_trip_and_mismatch_message() -> None:
    assert EmbeddingSpace.from_json(SPACE.to_json()) == SPACE
    other = EmbeddingSpace(
        model="n", weights_sha256="cd" * 32, input_size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3
    )
    with pytest.raises(EmbeddingSpaceError, match=r"index x: vectors of space n .* space m "):
        SPACE.require_same(other, what="index x")
    SPACE.require_same(SPACE, what="same")
    with pytest.raises(ConfigError, match="not a serialised EmbeddingSpace"):
        EmbeddingSpace.from_json('{"model": "m"}')
    with pytest.raises(ConfigError, match="crop_mode"):
        EmbeddingSpace(
            model="m",
            weights_sha256="x",
            input_size=(1, 1),
            mean=(0,) * 3,
            std=(1,) * 3,
            crop_mode="zoom",
        )


def test_embeddings_validation_and_select() -> None:
    vectors = np.eye(3, 2, dtype=np.float32)
    embeddings = Embeddings(vectors, ("a", "b", "c"), SPACE)
    picked = embeddings.select(["c", "a"])
    np.testing.assert_array_equal(picked.vectors, vectors[[2, 0]])
    assert picked.image_ids == ("c", "a")
    with pytest.raises(ConfigError, match=r"1 image id.*e\.g\. z"):
        embeddings.select(["z"])
    with pytest.raises(ConfigError, match="float32"):
        Embeddings(vectors.astype(np.float64), ("a", "b", "c"), SPACE)
    with pytest.raises(ConfigError, match="unique"):
        Embeddings(vectors, ("a", "a", "c"), SPACE)
    with pytest.raises(ConfigError, match="3 vectors but 2 image ids"):
        Embeddings(vectors, ("a", "b"), SPACE)
    with pytest.raises(EmbeddingSpaceError, match="dimension 3"):
        Embeddings(np.eye(3, dtype=np.float32), ("a", "b", "c"), SPACE)
    bad = vectors.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        Embeddings(bad, ("a", "b", "c"), SPACE)


def test_identification_requires_sorted_candidates_and_known_decision() -> None:
    ranked = (Candidate("x", "i1", 0.9), Candidate("y", "i2", 0.5))
    assert Identification("q", ranked, "known").candidates[0].identity == "x"
    with pytest.raises(ConfigError, match="descending"):
        Identification("q", ranked[::-1], "known")
    with pytest.raises(ConfigError, match="decision"):
        Identification("q", ranked, "maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="finite"):
        Candidate("x", "i", float("nan"))
