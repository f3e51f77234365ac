"""A catalogue's calibration: P(same individual) and the known / new / review thresholds, fitted
on the catalogue's own enrolled images and saved in the bundle (``DIR/calibration.json``).

:func:`fit_calibration` is the gallery-side protocol of :mod:`wildreid.evaluation.openset`
applied to the catalogue: its gallery images are carved into calibration queries and a
calibration gallery (a share of the individuals become pseudo-new; encounters are kept whole,
so two photos of one sighting are never paired across the carve), a calibrator is fitted on
every calibration pair's cosine score (:func:`~wildreid.evaluation.openset.fit_open_set_policy`)
and the threshold chosen for the target. With a re-ranking method, the calibration queries'
shortlists are matched locally as identify matches them, the local pair scores get their own
calibrator and the threshold is chosen again on the fused probability
(:func:`~wildreid.evaluation.openset.fuse_policy`: mean of the two probabilities, recalibrated,
:func:`~wildreid.matching.fusion.fuse_scores`).

:class:`CatalogueCalibration` is what identify uses. It is tied to the embedding space it was
fitted in (refused for another model or weights: the scores would mean something else) and
knows the local matcher it calibrated: identify with another re-ranking method (or none) uses
the global probability and the global threshold, and says so in the result's notes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from wildreid.catalogue.records import utc_now
from wildreid.errors import ConfigError
from wildreid.evaluation.openset import (
    OpenSetPolicy,
    fit_local_fusion,
    fit_open_set_policy,
    load_policy,
)
from wildreid.matching.calibration import Calibrator, calibrator_from_dict
from wildreid.matching.fusion import fuse_scores
from wildreid.types import EmbeddingSpace

if TYPE_CHECKING:
    from wildreid.catalogue.catalogue import Catalogue
    from wildreid.catalogue.local import LocalMatching

__all__ = ["CatalogueCalibration", "fit_calibration", "load_calibration"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CatalogueCalibration:
    """The open-set policy of a catalogue, with its optional local-score calibrator.

    Attributes:
        policy: the global calibrator and the threshold (on the fused probability when
            ``local`` is set).
        local_matcher: ``method/score`` of the re-ranking calibrated (empty: global only).
        local: the local pair-score calibrator.
    """

    policy: OpenSetPolicy
    local_matcher: str = ""
    local: Calibrator | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """The facts saved with the fit (pair counts, calibration-data metrics, ...)."""
        return self.policy.calibration.extra

    @property
    def global_threshold(self) -> float:
        """The threshold on the global probability alone."""
        return float(self.extra.get("global_threshold", self.policy.threshold))

    def uses_local(self, matcher: str) -> bool:
        """Whether identify re-ranked with ``matcher`` gets fused probabilities."""
        return self.local is not None and bool(matcher) and matcher == self.local_matcher

    def threshold(self, matcher: str) -> float:
        """The decision threshold for identifications re-ranked with ``matcher`` ("" none)."""
        return self.policy.threshold if self.uses_local(matcher) else self.global_threshold

    def probabilities(
        self, global_scores: npt.ArrayLike, local_scores: npt.ArrayLike, *, matcher: str
    ) -> npt.NDArray[np.float64]:
        """P(same individual) per candidate: the mean of the calibrated global and local
        probabilities where the pair was matched with the calibrated matcher, the global one
        alone elsewhere.

        Shapes:
            global_scores, local_scores: (K,); local NaN where not scored.
        """
        g = np.asarray(global_scores, dtype=np.float64)
        if not self.uses_local(matcher):
            return self.policy.probability(g)
        assert self.local is not None
        fused = fuse_scores(
            g[None],
            np.asarray(local_scores, dtype=np.float64)[None],
            global_calibrator=self.policy.calibration.calibrator,
            local_calibrator=self.local,
            recalibrator=self.policy.fused_calibrator,
        )
        result: npt.NDArray[np.float64] = fused[0]
        return result

    def describe(self, matcher: str) -> dict[str, Any]:
        """What an identification records about the calibration it used."""
        local = self.uses_local(matcher)
        return {
            "kind": self.policy.calibration.calibrator.kind,
            "matcher": f"global-cosine+{self.local_matcher}" if local else "global-cosine",
            "threshold": self.threshold(matcher),
            "target": self.policy.target,
            "fitted_at": self.extra.get("fitted_at", ""),
        }


def load_calibration(path: str | Path, *, space: EmbeddingSpace) -> CatalogueCalibration:
    """Read a catalogue's calibration file.

    Raises:
        DataError: unreadable, or not a calibration with a policy.
        EmbeddingSpaceError: fitted for another model, weights or preprocessing.
    """
    policy = load_policy(path, space=space)
    extra = policy.calibration.extra
    state = extra.get("local_calibrator")
    local = calibrator_from_dict(state) if isinstance(state, dict) else None
    return CatalogueCalibration(policy, str(extra.get("local_matcher", "")) if local else "", local)


def _gallery(cat: Catalogue) -> tuple[list[str], npt.NDArray[np.float32], list[str], list[str]]:
    """Gallery image ids of named individuals, their unit vectors, identities and groups."""
    from wildreid.catalogue.catalogue import _space_key

    images = [
        i
        for i in cat.store.images(role="gallery")
        if i.individual_id and i.individual_id != "unknown"
    ]
    ids = [i.image_id for i in images]
    vectors = np.asarray(cat.store.vectors(_space_key(cat.space), ids), dtype=np.float32)
    if len(ids):
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = [str(i.individual_id) for i in images]
    # An encounter (one sighting) is kept on one side of the carve; no encounter: the photo alone.
    groups = [i.encounter or f"\x00{i.image_id}" for i in images]
    return ids, vectors, labels, groups


def fit_calibration(
    cat: Catalogue,
    *,
    local: LocalMatching | None = None,
    kind: str = "isotonic",
    target: str = "open_score",
    max_false_new: float = 0.05,
    review_margin: float = 0.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> CatalogueCalibration:
    """Fit the calibration on the catalogue's gallery (module docstring); not saved here.

    Raises:
        ConfigError: invalid options, or too few individuals to carve.
        DataError: too few positive or negative pairs (counts named).
    """
    ids, vectors, labels, groups = _gallery(cat)
    if len(set(labels)) < 3:
        raise ConfigError(
            f"calibration needs a catalogue with at least 3 individuals photographed more than "
            f"once; {cat.root} has {len(set(labels))} individual(s) with gallery photos"
        )
    scores = vectors @ vectors.T
    policy = fit_open_set_policy(
        scores,
        labels,
        space=cat.space,
        groups=groups,
        kind=kind,
        target=target,
        max_false_new=max_false_new,
        review_margin=review_margin,
        seed=seed,
    )
    local_calibrator: Calibrator | None = None
    matcher = ""
    if local is not None:
        records = {i.image_id: i for i in cat.store.images(role="gallery")}
        features = local.features([records[i] for i in ids], progress=progress)
        matcher = local.matcher_name
        try:
            policy, local_calibrator, _ = fit_local_fusion(
                policy, scores, labels, groups, local.reranker, [features.get(i) for i in ids], ids
            )
        except ConfigError as exc:
            raise ConfigError(f"{exc}; run `catalogue check`") from exc
    extra = policy.calibration.extra
    extra.update({"fitted_at": utc_now(), "model": cat.model, "gallery_images": len(ids)})
    if local is not None:
        extra["rerank"] = local.describe()
    logger.info(
        "calibrated %s on %d gallery images: threshold %.4f%s",
        cat.root,
        len(ids),
        policy.threshold,
        f" (fused with {matcher})" if matcher else "",
    )
    return CatalogueCalibration(policy, matcher, local_calibrator)


def calibrator_state(calibration: CatalogueCalibration) -> dict[str, Any]:
    """The calibration's summary for people (CLI, service)."""
    extra = calibration.extra
    keys = (
        "fitted_at",
        "model",
        "gallery_images",
        "calibration_queries",
        "calibration_gallery",
        "positive_pairs",
        "negative_pairs",
        "calibration_ECE",
        "calibration_open_score",
        "fused_calibration_open_score",
        "local_positive_pairs",
        "local_negative_pairs",
        "rerank",
    )
    return {
        "kind": calibration.policy.calibration.calibrator.kind,
        "local_matcher": calibration.local_matcher,
        "threshold": calibration.policy.threshold,
        "global_threshold": calibration.global_threshold,
        "review_margin": calibration.policy.review_margin,
        "target": calibration.policy.target,
        **{k: extra[k] for k in keys if k in extra},
    }
