"""The one tie-aware top-k: the best columns of each row of a score matrix.

Every ranking in wildreid (the exact index, the evaluation metrics, the report's ranking, the
decision layer) orders items by descending score and breaks ties by a secondary key, by default
the column position (the earlier column first, as a stable argsort of ``-scores`` would). Only
the best ``k`` are sorted: they are found by partitioning, and a row whose ``k``-th score is
tied with items beyond the cut is resolved by the key, so the result never depends on how
numpy's partition happened to split a tie.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["top_k"]


def top_k(
    scores: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    k: int,
    *,
    key: npt.NDArray[np.integer] | None = None,
) -> npt.NDArray[np.intp]:
    """Column indices of the ``min(k, C)`` best scores of every row, best first.

    Args:
        scores: higher is better; ``-inf`` ranks last, NaN is not allowed.
        k: columns kept per row (``>= 1``).
        key: tie-breaker, the smaller first; defaults to the column index. Same shape as
            ``scores``.

    Shapes:
        scores: (R, C). key: (R, C) or None. return: (R, min(k, C)) intp.
    """
    rows, columns = scores.shape
    depth = min(int(k), columns)
    if key is None:
        key = np.broadcast_to(np.arange(columns, dtype=np.intp), scores.shape)
    if depth == 0 or rows == 0:
        return np.empty((rows, depth), dtype=np.intp)
    if depth < columns:
        cut = np.partition(scores, columns - depth, axis=1)[:, columns - depth]
        kept = scores >= cut[:, None]
        counts = np.count_nonzero(kept, axis=1)
        if (counts == depth).all():  # no tie across the cut: the usual case
            candidates = np.nonzero(kept)[1].reshape(rows, depth)
        else:
            width = int(counts.max())
            # Rows with ties keep every tied column; padding (-inf, largest key) sorts last.
            order = np.argsort(~kept, axis=1, kind="stable")[:, :width]
            candidates = order
    else:
        candidates = np.broadcast_to(np.arange(columns, dtype=np.intp), scores.shape)
    values = np.take_along_axis(scores, candidates, axis=1)
    keys = np.take_along_axis(key, candidates, axis=1)
    if depth < columns and candidates.shape[1] > depth:
        padding = ~np.take_along_axis(kept, candidates, axis=1)
        values = np.where(padding, -np.inf, values)
        keys = np.where(padding, np.iinfo(np.intp).max, keys)
    order = np.lexsort((keys, -values), axis=1)[:, :depth]
    result: npt.NDArray[np.intp] = np.take_along_axis(candidates, order, axis=1).astype(np.intp)
    return result
