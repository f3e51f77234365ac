"""wildreid: re-identify individual animals from photos of their natural markings.

The curated public API. Importing the package has no side effects and stays fast: the names
that need torch or faiss (models, embedding, indexes, evaluation runs) are imported on first use.
"""

from __future__ import annotations

import importlib
import typing

from wildreid.data.images import DEFAULT_MAX_PIXELS, image_size, load_image
from wildreid.data.importers import import_coco, import_folders, import_table
from wildreid.data.schema import (
    UNKNOWN_IDENTITY,
    BBox,
    Landmark,
    Problem,
    check_metadata,
    read_metadata,
    validate_metadata,
    write_metadata,
)
from wildreid.data.splits import SplitConfig, SplitSummary, make_split, read_split, write_split
from wildreid.data.stats import DatasetStats, dataset_stats
from wildreid.data.synthetic import SynthConfig, SynthResult, generate_synthetic
from wildreid.errors import (
    ConfigError,
    DataError,
    EmbeddingSpaceError,
    ImageReadError,
    IndexBackendError,
    MetadataError,
    UnknownComponentError,
    WeightsError,
    WildReIDError,
)
from wildreid.types import (
    Candidate,
    Embeddings,
    EmbeddingSpace,
    Identification,
    LocalFeatures,
    Matches,
)

__version__ = "0.1.0"

_LAZY = {
    "DEFAULT_MODEL": "wildreid.models.cards",
    "ModelCard": "wildreid.models.cards",
    "EmbeddingModel": "wildreid.models.factory",
    "list_models": "wildreid.models.factory",
    "load_model": "wildreid.models.factory",
    "model_card": "wildreid.models.factory",
    "Embedder": "wildreid.models.embedder",
    "EmbedderConfig": "wildreid.models.embedder",
    "EmbedResult": "wildreid.models.embedder",
    "EmbeddingCache": "wildreid.models.cache",
    "load_embeddings": "wildreid.embeddings_file",
    "save_embeddings": "wildreid.embeddings_file",
    "VectorIndex": "wildreid.index.protocol",
    "SearchResult": "wildreid.index.protocol",
    "build_index": "wildreid.index.kinds",
    "load_index": "wildreid.index.kinds",
    "identify": "wildreid.matching.identification",
    "rank_identities": "wildreid.matching.identification",
    "ExtractorConfig": "wildreid.matching.extractors",
    "LocalExtractor": "wildreid.matching.extractors",
    "build_extractor": "wildreid.matching.extractors",
    "MatcherConfig": "wildreid.matching.matchers",
    "PairMatcher": "wildreid.matching.matchers",
    "build_matcher": "wildreid.matching.matchers",
    "verify": "wildreid.matching.verification",
    "FeatureCache": "wildreid.matching.feature_cache",
    "extract_features": "wildreid.matching.feature_cache",
    "RerankConfig": "wildreid.matching.rerank",
    "Reranker": "wildreid.matching.rerank",
    "rerank_config": "wildreid.matching.rerank",
    "evaluate_scores": "wildreid.evaluation.protocol",
    "Protocol": "wildreid.evaluation.protocol",
    "EvaluationResult": "wildreid.evaluation.protocol",
    "evaluate_embeddings": "wildreid.evaluation.protocol",
    "protocol_from_split": "wildreid.evaluation.protocol",
    "write_report": "wildreid.evaluation.report",
    "embed_dataset": "wildreid.pipeline",
    "evaluate_dataset": "wildreid.pipeline",
    "load_dataset": "wildreid.pipeline",
    "run_demo": "wildreid.demo",
    "load_config": "wildreid.config",
    "dump_config": "wildreid.config",
    "LossSpec": "wildreid.losses",
    "build_loss": "wildreid.losses",
    "TrainConfig": "wildreid.training.config",
    "TrainResult": "wildreid.training.trainer",
    "train": "wildreid.training.trainer",
    "tune": "wildreid.training.tuning",
}


def __getattr__(name: str) -> typing.Any:
    """Import the heavy public names on first use (see the module docstring)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'wildreid' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "UNKNOWN_IDENTITY",
    "BBox",
    "Candidate",
    "ConfigError",
    "DataError",
    "DatasetStats",
    "EmbedResult",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingCache",
    "EmbeddingModel",
    "EmbeddingSpace",
    "EmbeddingSpaceError",
    "Embeddings",
    "EvaluationResult",
    "ExtractorConfig",
    "FeatureCache",
    "Identification",
    "ImageReadError",
    "IndexBackendError",
    "Landmark",
    "LocalExtractor",
    "LocalFeatures",
    "LossSpec",
    "MatcherConfig",
    "Matches",
    "MetadataError",
    "ModelCard",
    "PairMatcher",
    "Problem",
    "Protocol",
    "RerankConfig",
    "Reranker",
    "SearchResult",
    "SplitConfig",
    "SplitSummary",
    "SynthConfig",
    "SynthResult",
    "TrainConfig",
    "TrainResult",
    "UnknownComponentError",
    "VectorIndex",
    "WeightsError",
    "WildReIDError",
    "__version__",
    "build_extractor",
    "build_index",
    "build_loss",
    "build_matcher",
    "check_metadata",
    "dataset_stats",
    "dump_config",
    "embed_dataset",
    "evaluate_dataset",
    "evaluate_embeddings",
    "evaluate_scores",
    "extract_features",
    "generate_synthetic",
    "identify",
    "image_size",
    "import_coco",
    "import_folders",
    "import_table",
    "list_models",
    "load_config",
    "load_dataset",
    "load_embeddings",
    "load_image",
    "load_index",
    "load_model",
    "make_split",
    "model_card",
    "protocol_from_split",
    "rank_identities",
    "read_metadata",
    "read_split",
    "rerank_config",
    "run_demo",
    "save_embeddings",
    "train",
    "tune",
    "validate_metadata",
    "verify",
    "write_metadata",
    "write_report",
    "write_split",
]
