"""The evaluation report: ``metrics.json``, ``cmc.png`` and a self-contained ``report.html``.

The HTML page embeds every picture as a data URI (thumbnails as JPEG, ``THUMB_HEIGHT_PX`` high),
so the single file can be mailed. It shows the metrics (fractions as percentages with one
decimal), the configuration, the CMC curve and, for a sample of queries, the query followed by
its top-5 gallery matches framed green (same individual) or red (another one), with identity and
score under each. Every string is HTML-escaped (jinja2 autoescaping). An image that cannot be read
is shown as a grey "unreadable" tile and logged as a warning.

Choice of the examples (deterministic for a ``seed``): the queries fall into three pools, *wrong*
(known individual, wrong top-1), *correct* (known, right top-1) and *new* (no same-identity item
in its gallery). Up to half of the ``n`` examples (rounded up) are wrong queries, the failures
being the informative ones; the rest go to correct queries, or split evenly between correct and
new queries (correct ones get the odd one) when there are new queries. A pool too small to fill
its share leaves the remainder to the others, in the order wrong, correct, new. Each pool is
shuffled once with ``numpy.random.default_rng(seed)``; the page shows the pools in that order,
each in query order.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image

from wildreid.data.images import load_image
from wildreid.data.schema import parse_bbox
from wildreid.errors import ConfigError, DataError, ImageReadError
from wildreid.evaluation.metrics import UNKNOWN_LABEL
from wildreid.evaluation.protocol import EvaluationResult
from wildreid.files import atomic_path
from wildreid.viz.match_grid import (
    CORRECT_RGB,
    QUERY_RGB,
    WRONG_RGB,
    fit_height,
    placeholder_image,
)
from wildreid.viz.plots import plot_cmc, plot_reliability

__all__ = ["THUMB_HEIGHT_PX", "ReportFiles", "choose_examples", "write_report"]

logger = logging.getLogger(__name__)

THUMB_HEIGHT_PX: Final = 128
_JPEG_QUALITY: Final = 80
_TOP_MATCHES: Final = 5
_METRIC_LABELS: Final = {
    "top1": ("top-1 accuracy", "known queries whose best match is the right individual"),
    "top5": ("top-5 accuracy", "right individual among the 5 best matches"),
    "top10": ("top-10 accuracy", "right individual among the 10 best matches"),
    "mAP": ("mAP", "mean average precision over the ranked gallery"),
    "mINP": ("mINP", "mean inverse negative penalty (hardest match)"),
    "BAKS": ("BAKS", "balanced accuracy on known individuals at the threshold"),
    "BAUS": ("BAUS", "balanced accuracy on new individuals at the threshold"),
    "new_auroc": ("new-individual AUROC", "telling new from known individuals by top-1 score"),
    "threshold": ("threshold", "cosine similarity at or above which a match is accepted"),
    "threshold_fpr": ("threshold FPR", "known queries called new at the chosen threshold"),
    "n_queries": ("queries", ""),
    "n_known_queries": ("known queries", "identity in their gallery"),
    "n_new_queries": ("new queries", "identity absent from their gallery, or unknown"),
    "n_gallery": ("gallery images", ""),
    "excluded_pairs": ("excluded pairs", "query-gallery pairs not compared"),
}
_COUNTS: Final = ("n_queries", "n_known_queries", "n_new_queries", "n_gallery", "excluded_pairs")
_OUTCOME_TEXT: Final = {
    "wrong": "wrong top-1",
    "correct": "correct top-1",
    "new": "new individual",
}


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`write_report` wrote."""

    metrics_json: Path
    report_html: Path
    cmc_png: Path


def _css(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _outcomes(result: EvaluationResult) -> npt.NDArray[np.str_]:
    """(Q,) ``wrong``, ``correct`` or ``new`` for every query."""
    top1 = result.ranking[:, 0]
    labels = np.array(result.gallery_labels, dtype=object)
    queries = np.array(result.query_labels, dtype=object)
    right = (top1 >= 0) & (labels[np.maximum(top1, 0)] == queries) & (queries != UNKNOWN_LABEL)
    known = np.asarray(result.known, dtype=np.bool_)
    return np.where(~known, "new", np.where(right, "correct", "wrong")).astype(np.str_)


def choose_examples(result: EvaluationResult, n_examples: int, *, seed: int = 0) -> list[int]:
    """Query indices to show, chosen as described in the module docstring.

    Raises:
        ConfigError: ``n_examples < 0``.
    """
    if n_examples < 0:
        raise ConfigError(f"n_examples must be >= 0, got {n_examples}")
    outcomes = _outcomes(result)
    rng = np.random.default_rng(seed)
    names = ("wrong", "correct", "new")
    pools = [rng.permutation(np.flatnonzero(outcomes == name)).tolist() for name in names]
    n = min(n_examples, len(outcomes))
    n_wrong = math.ceil(n / 2)
    rest = n - n_wrong
    n_new = rest // 2 if pools[2] else 0
    wanted = [n_wrong, rest - n_new, n_new]
    taken = [min(want, len(pool)) for want, pool in zip(wanted, pools, strict=True)]
    short = n - sum(taken)
    for i, pool in enumerate(pools):
        extra = min(short, len(pool) - taken[i])
        taken[i] += extra
        short -= extra
    return [
        index for count, pool in zip(taken, pools, strict=True) for index in sorted(pool[:count])
    ]


def _metric_rows(metrics: Mapping[str, float]) -> list[dict[str, str]]:
    keys = [k for k in _METRIC_LABELS if k in metrics] + sorted(
        k for k in metrics if k not in _METRIC_LABELS
    )
    rows = []
    for key in keys:
        value = metrics[key]
        label, note = _METRIC_LABELS.get(key, (key, ""))
        if key in _COUNTS:
            text = f"{int(value):,}"
        elif key == "threshold":
            text = f"{value:.4f}"
        else:
            text = f"{100 * value:.1f}%"
        rows.append({"label": label, "value": text, "note": note})
    return rows


def _config_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(key), value if isinstance(value, str) else json.dumps(value, default=str))
        for key, value in config.items()
    ]


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class _Thumbnails:
    """JPEG data URIs of the metadata images, each decoded at most once."""

    def __init__(self, metadata: pd.DataFrame, root: Path) -> None:
        for column in ("image_id", "path"):
            if column not in metadata.columns:
                raise DataError(f"metadata: missing column {column!r}; the report needs it")
        ids = metadata["image_id"].astype(str)
        bboxes = metadata["bbox"] if "bbox" in metadata.columns else pd.Series("", index=ids.index)
        self._rows = dict(
            zip(
                ids,
                zip(metadata["path"].astype(str), bboxes.fillna("").astype(str), strict=True),
                strict=True,
            )
        )
        self._root = root
        self._cache: dict[str, str] = {}

    def uri(self, image_id: str) -> str:
        """The thumbnail of ``image_id``; a grey "unreadable" tile if it cannot be loaded."""
        if image_id not in self._cache:
            self._cache[image_id] = _data_uri(fit_height(self._load(image_id), THUMB_HEIGHT_PX))
        return self._cache[image_id]

    def _load(self, image_id: str) -> Image.Image:
        if image_id not in self._rows:
            raise DataError(f"image {image_id!r} of the evaluation is not in the metadata")
        path, bbox_text = self._rows[image_id]
        try:
            bbox = parse_bbox(bbox_text)
            return load_image(
                self._root / path,
                bbox=None if bbox is None else bbox.as_tuple(),
                target_size=(1, THUMB_HEIGHT_PX),
            )
        except (ImageReadError, ValueError) as exc:
            logger.warning("Showing image %r as unreadable in the report: %s", image_id, exc)
            return placeholder_image(THUMB_HEIGHT_PX)


PairDrawer = Callable[[str, str], Image.Image]
"""Draws the evidence for a (query id, gallery id) pair, e.g. matched keypoints."""

_DRAWN_PAIRS: Final = 3


def _drawing_uri(drawer: PairDrawer, query_id: str, gallery_id: str) -> str | None:
    try:
        return _data_uri(drawer(query_id, gallery_id))
    except (ImageReadError, ValueError) as exc:
        logger.warning("No match drawing for %r and %r: %s", query_id, gallery_id, exc)
        return None


def _example(
    result: EvaluationResult,
    index: int,
    outcome: str,
    thumbs: _Thumbnails,
    drawer: PairDrawer | None = None,
) -> dict[str, Any]:
    identity = result.query_labels[index]
    matches = []
    for column in result.ranking[index, :_TOP_MATCHES]:
        if column < 0:
            break
        label = result.gallery_labels[column]
        matches.append(
            {
                "image_id": result.gallery_ids[column],
                "identity": label,
                "score": f"{float(result.scores[index, column]):.3f}",
                "correct": label == identity and identity != UNKNOWN_LABEL,
                "uri": thumbs.uri(result.gallery_ids[column]),
            }
        )
    drawings = []
    if drawer is not None:
        for match in matches[:_DRAWN_PAIRS]:
            uri = _drawing_uri(drawer, result.query_ids[index], match["image_id"])
            if uri is not None:
                drawings.append({"uri": uri, "identity": match["identity"]})
    return {
        "query_id": result.query_ids[index],
        "identity": identity,
        "outcome": outcome,
        "outcome_text": _OUTCOME_TEXT[outcome],
        "query_uri": thumbs.uri(result.query_ids[index]),
        "matches": matches,
        "drawings": drawings,
    }


def _comparison_rows(
    metrics: Mapping[str, float], sections: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Global-only vs final metrics, when the final ranking was re-ranked."""
    global_metrics = sections.get("global")
    if not isinstance(global_metrics, Mapping):
        return []
    rows = []
    for key in ("top1", "top5", "top10", "mAP"):
        if key in metrics and key in global_metrics:
            rows.append(
                {
                    "label": _METRIC_LABELS[key][0],
                    "global": f"{100 * global_metrics[key]:.1f}%",
                    "final": f"{100 * metrics[key]:.1f}%",
                }
            )
    return rows


def write_report(
    result: EvaluationResult,
    *,
    metadata: pd.DataFrame,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    title: str,
    config: Mapping[str, Any],
    n_examples: int = 24,
    seed: int = 0,
    sections: Mapping[str, Any] | None = None,
    pair_drawer: PairDrawer | None = None,
) -> ReportFiles:
    """Write ``metrics.json``, ``cmc.png`` and ``report.html`` into ``out_dir``, each atomically.

    Args:
        result: what :func:`~wildreid.evaluation.protocol.evaluate_embeddings` returned.
        metadata: the metadata table (``image_id``, ``path``, optional ``bbox``).
        root: the folder image paths are relative to.
        out_dir: created if needed.
        title: page and plot title.
        config: what was evaluated (model, space, split, exclusions, ...); JSON-serialisable
            values, or values whose ``str`` is meaningful (paths).
        n_examples: how many queries to show with their matches (see the module docstring).
        seed: seed of the choice of examples.
        sections: more top-level entries of ``metrics.json`` (``global``: the global-only
            metrics of a re-ranked evaluation, shown beside the final ones; ``rerank``: what
            re-ranking measured, shown as a table).
        pair_drawer: draws the evidence of a (query, gallery) pair; the report shows it for each
            example's best candidates.

    Returns:
        The paths written. ``metrics.json`` holds ``title``, ``metrics`` (equal to
        ``result.metrics``), ``config``, ``counts`` and the ``sections``.

    Raises:
        ConfigError: ``n_examples < 0``, or ``config`` holds NaN or infinity.
        DataError: the metadata lacks a column or an image id of the evaluation.
    """
    out = Path(out_dir)
    files = ReportFiles(out / "metrics.json", out / "report.html", out / "cmc.png")
    chosen = choose_examples(result, n_examples, seed=seed)
    document = {
        "title": title,
        "metrics": result.metrics,
        "config": dict(config),
        "counts": {k: int(result.metrics[k]) for k in _COUNTS if k in result.metrics},
        **(sections or {}),
    }
    try:
        metrics_text = json.dumps(document, indent=2, allow_nan=False, default=str)
    except ValueError as exc:
        raise ConfigError(f"the report config or metrics hold NaN or infinity ({exc})") from exc
    thumbs = _Thumbnails(metadata, Path(root))
    outcomes = _outcomes(result)
    examples = [_example(result, i, str(outcomes[i]), thumbs, pair_drawer) for i in chosen]
    rerank = (sections or {}).get("rerank")
    plot_cmc(result.cmc, files.cmc_png, title=f"{title}: CMC")
    reliability_uri = ""
    if result.reliability is not None:
        reliability_png = Path(out_dir) / "reliability.png"
        plot_reliability(result.reliability, reliability_png, title=f"{title}: reliability")
        reliability_uri = "data:image/png;base64," + base64.b64encode(
            reliability_png.read_bytes()
        ).decode("ascii")
    with atomic_path(files.metrics_json) as tmp:
        tmp.write_text(metrics_text + "\n", encoding="utf-8")
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("wildreid.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = environment.get_template("report.html.j2").render(
        title=title,
        metric_rows=_metric_rows(result.metrics),
        comparison_rows=_comparison_rows(result.metrics, sections or {}),
        rerank_rows=_config_rows(rerank) if isinstance(rerank, Mapping) else [],
        config_rows=_config_rows(config),
        reliability_uri=reliability_uri,
        cmc_uri="data:image/png;base64,"
        + base64.b64encode(files.cmc_png.read_bytes()).decode("ascii"),
        sampling_note=(
            f"{len(examples)} of {len(result.query_ids)} queries (seed {seed}): wrong top-1 "
            "first, then correct top-1, then new individuals."
        ),
        examples=examples,
        thumb_px=THUMB_HEIGHT_PX,
        correct_css=_css(CORRECT_RGB),
        wrong_css=_css(WRONG_RGB),
        query_css=_css(QUERY_RGB),
    )
    with atomic_path(files.report_html) as tmp:
        tmp.write_text(html, encoding="utf-8")
    logger.info("Wrote the evaluation report %s (%d examples)", files.report_html, len(examples))
    return files
