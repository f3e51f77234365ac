"""From image-level nearest neighbours to ranked identities and an open-set decision.

The index returns gallery *images*; an animal usually has several. :func:`rank_identities`
groups the retrieved hits of each query by identity and scores every identity:

- ``"max"``: the score of its best-matching retrieved image;
- ``"topk_mean"``: the mean of its ``topk`` best retrieved image scores. Only hits the search
  returned count, so an identity with fewer than ``topk`` retrieved images is scored by the mean
  of those it has (no penalty for the missing ones: a rarely photographed animal is not pushed
  down for having few gallery images). Retrieve enough images (``k_images``) for the means to be
  meaningful.

A candidate's ``image_id`` is that identity's best-scoring retrieved image. Gallery images of
identity ``"unknown"`` are never proposed: an unnamed animal cannot be the answer. Ties are
broken by identity name (and, for the supporting image, by image id), so results do not depend
on the order in which an index happened to return tied hits.

:func:`identify` adds the open-set decision on the top candidate's score ``s``: without a
threshold every query with a candidate is ``"known"``; with threshold ``t`` and margin ``m``,
``s >= t + m`` is ``"known"``, ``s < t - m`` is ``"new"`` and anything between is ``"review"``.
A query without any candidate (empty gallery, or only unknown animals retrieved) is ``"new"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from wildreid.data.schema import UNKNOWN_IDENTITY
from wildreid.errors import ConfigError
from wildreid.index.protocol import PAD_ID, SearchResult, VectorIndex
from wildreid.types import DECISIONS, Candidate, Decision, Embeddings, Identification

__all__ = ["AGGREGATIONS", "Aggregation", "decide", "decide_scores", "identify", "rank_identities"]

Aggregation = Literal["max", "topk_mean"]
AGGREGATIONS: tuple[Aggregation, ...] = ("max", "topk_mean")


def _check_options(aggregation: str, topk: int, max_candidates: int) -> None:
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"aggregation {aggregation!r} not in {AGGREGATIONS}")
    if topk < 1:
        raise ConfigError(f"topk must be >= 1, got {topk}")
    if max_candidates < 1:
        raise ConfigError(f"max_candidates must be >= 1, got {max_candidates}")


def _rank_row(
    hits: list[tuple[str, float]],
    gallery_identity: Mapping[str, str],
    aggregation: Aggregation,
    topk: int,
    max_candidates: int,
) -> list[Candidate]:
    scores: dict[str, list[float]] = {}
    best_image: dict[str, tuple[float, str]] = {}
    for image_id, score in hits:
        try:
            identity = gallery_identity[image_id]
        except KeyError:
            raise ConfigError(
                f"gallery image {image_id!r} returned by the index has no identity in "
                "gallery_identity; pass the identities of every indexed image"
            ) from None
        if identity == UNKNOWN_IDENTITY:
            continue
        scores.setdefault(identity, []).append(score)
        best = best_image.get(identity)
        if best is None or score > best[0] or (score == best[0] and image_id < best[1]):
            best_image[identity] = (score, image_id)
    ranked: list[tuple[float, str]] = []
    for identity, values in scores.items():
        if aggregation == "max":
            value = max(values)
        else:
            value = float(np.mean(sorted(values, reverse=True)[:topk], dtype=np.float64))
        ranked.append((value, identity))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return [
        Candidate(identity=identity, image_id=best_image[identity][1], score=value)
        for value, identity in ranked[:max_candidates]
    ]


def rank_identities(
    search: SearchResult,
    gallery_identity: Mapping[str, str],
    *,
    aggregation: Aggregation = "max",
    topk: int = 3,
    max_candidates: int = 5,
) -> list[list[Candidate]]:
    """Aggregate each query's image hits per identity; best identity first.

    Args:
        search: image-level hits; padding and non-finite scores are ignored.
        gallery_identity: identity of every gallery image id the index may return.
        aggregation: ``"max"`` or ``"topk_mean"`` (see the module docstring).
        topk: images averaged per identity by ``"topk_mean"``.
        max_candidates: identities kept per query.

    Shapes:
        search: SearchResult (Q, k). return: Q lists of at most ``max_candidates`` candidates.

    Raises:
        ConfigError: invalid options, or a returned image id missing from ``gallery_identity``.
    """
    _check_options(aggregation, topk, max_candidates)
    result: list[list[Candidate]] = []
    for ids_row, scores_row in zip(search.image_ids, search.scores, strict=True):
        hits = [
            (str(image_id), float(score))
            for image_id, score in zip(ids_row, scores_row, strict=True)
            if image_id != PAD_ID and math.isfinite(score)
        ]
        result.append(_rank_row(hits, gallery_identity, aggregation, topk, max_candidates))
    return result


def _check_decision_options(threshold: float | None, review_margin: float) -> None:
    if review_margin < 0:
        raise ConfigError(f"review_margin must be >= 0, got {review_margin}")
    if threshold is None and review_margin:
        raise ConfigError("review_margin needs a threshold; pass threshold= as well")


def decide_scores(
    top_scores: npt.ArrayLike, *, threshold: float | None, review_margin: float = 0.0
) -> npt.NDArray[np.str_]:
    """The open-set decision for each query's top-candidate score (rules in the module
    docstring); NaN or ``-inf`` (no candidate) is ``"new"``.

    Shapes:
        top_scores: (Q,). return: (Q,) of ``known`` / ``new`` / ``review``.

    Raises:
        ConfigError: a negative margin, or a margin without a threshold.
    """
    _check_decision_options(threshold, review_margin)
    top = np.asarray(top_scores, dtype=np.float64)
    present = np.isfinite(top) | np.isposinf(top)
    if threshold is None:
        return np.where(present, "known", "new").astype(np.str_)
    known = present & (top >= threshold + review_margin)
    new = ~present | (top < threshold - review_margin)
    return np.where(known, "known", np.where(new, "new", "review")).astype(np.str_)


def decide(
    candidates: list[Candidate] | tuple[Candidate, ...],
    *,
    threshold: float | None = None,
    review_margin: float = 0.0,
) -> Decision:
    """The open-set decision for ranked candidates (rules in the module docstring).

    Raises:
        ConfigError: a negative margin, or a margin without a threshold.
    """
    top = candidates[0].score if candidates else math.nan
    decision = str(decide_scores([top], threshold=threshold, review_margin=review_margin)[0])
    assert decision in DECISIONS
    return cast(Decision, decision)


def identify(
    index: VectorIndex,
    queries: Embeddings,
    gallery_identity: Mapping[str, str],
    *,
    k_images: int = 50,
    aggregation: Aggregation = "max",
    topk: int = 3,
    max_candidates: int = 5,
    threshold: float | None = None,
    review_margin: float = 0.0,
) -> list[Identification]:
    """Search ``index``, rank identities and decide known / new / review for every query.

    Args:
        index: gallery images of the queries' embedding space.
        queries: the query embeddings; their image ids become the ``query_id``s.
        gallery_identity: identity of every image in ``index``.
        k_images: gallery images retrieved per query before aggregation.
        aggregation, topk, max_candidates: as in :func:`rank_identities`.
        threshold, review_margin: as in :func:`decide`.

    Shapes:
        queries: (Q, D). return: Q identifications, in query order.

    Raises:
        EmbeddingSpaceError: the queries are of another space than the index.
        ConfigError: invalid options or a gallery image without an identity.
    """
    _check_options(aggregation, topk, max_candidates)
    decide([], threshold=threshold, review_margin=review_margin)  # validate before searching
    search = index.search(queries, k_images)
    ranked = rank_identities(
        search,
        gallery_identity,
        aggregation=aggregation,
        topk=topk,
        max_candidates=max_candidates,
    )
    return [
        Identification(
            query_id=query_id,
            candidates=tuple(candidates),
            decision=decide(candidates, threshold=threshold, review_margin=review_margin),
            threshold=threshold,
        )
        for query_id, candidates in zip(queries.image_ids, ranked, strict=True)
    ]
