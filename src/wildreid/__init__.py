"""wildreid: re-identify individual animals from photos of their natural markings.

The curated public API. Importing the package has no side effects; heavy optional dependencies
(matplotlib, torch) are imported only by the functions that need them.
"""

from __future__ import annotations

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
    ImageReadError,
    MetadataError,
    UnknownComponentError,
    WildReIDError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "UNKNOWN_IDENTITY",
    "BBox",
    "ConfigError",
    "DataError",
    "DatasetStats",
    "ImageReadError",
    "Landmark",
    "MetadataError",
    "Problem",
    "SplitConfig",
    "SplitSummary",
    "SynthConfig",
    "SynthResult",
    "UnknownComponentError",
    "WildReIDError",
    "__version__",
    "check_metadata",
    "dataset_stats",
    "generate_synthetic",
    "image_size",
    "import_coco",
    "import_folders",
    "import_table",
    "load_image",
    "make_split",
    "read_metadata",
    "read_split",
    "validate_metadata",
    "write_metadata",
    "write_split",
]
