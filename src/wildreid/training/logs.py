"""What a training run records: ``metrics.csv``, TensorBoard events and a log line per epoch.

``metrics.csv`` has one row per epoch: ``epoch`` (1-based), ``step`` (optimizer steps so far),
``lr`` (the head's rate at the end of the epoch), ``loss`` (mean weighted total per batch),
``loss_<name>`` (mean weighted term of each loss, in config order), ``n_triplets`` (mean mined
triplets per batch; empty without a mining loss), ``zero_triplet_batches``, ``val_top1`` and
``val_mAP`` (empty in epochs without validation) and ``seconds`` (the epoch's wall time,
validation included). TensorBoard events (``tensorboard/``) hold the same per epoch under
``epoch/*`` and ``val/*``, and the loss terms and rate per iteration under ``train/*``
(``tensorboard --logdir RUN_DIR/tensorboard``).

On resume the CSV is rewritten from the history saved in ``last.pt`` and TensorBoard events
past the resumed step are purged, so an interrupted epoch leaves no trace. The CSV is rewritten
whole through a temporary file after every epoch (one rename), so it is never half written.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wildreid.files import atomic_path

__all__ = ["METRICS_FILENAME", "TENSORBOARD_DIRNAME", "RunLog", "epoch_line"]

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.csv"
TENSORBOARD_DIRNAME = "tensorboard"
_FIRST = ("epoch", "step", "lr", "loss")
_LAST = ("n_triplets", "zero_triplet_batches", "val_top1", "val_mAP", "seconds")


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """``epoch 3/10 step 45 lr 3.2e-04 loss 1.234 (triplet 0.21, ...) val top1 81.0% ...``."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"step {record['step']}",
        f"lr {record['lr']:.2e}",
        f"loss {record['loss']:.4f}",
    ]
    terms = [f"{k[5:]} {v:.4f}" for k, v in record.items() if k.startswith("loss_")]
    if terms:
        parts.append(f"({', '.join(terms)})")
    if record.get("n_triplets") is not None:
        parts.append(f"triplets/batch {record['n_triplets']:.0f}")
    if record.get("val_mAP") is not None:
        parts.append(f"val top1 {100 * record['val_top1']:.1f}% mAP {100 * record['val_mAP']:.1f}%")
    parts.append(f"{record['seconds']:.0f} s")
    return " ".join(parts)


class RunLog:
    """Writes ``metrics.csv`` and TensorBoard events of one run (rank 0 only).

    Args:
        run_dir: the run directory.
        loss_names: the loss terms, in config order (their CSV columns).
        history: epochs already recorded (on resume), written to the CSV first.
        start_step: the optimizer step training (re)starts at; later TensorBoard events
            are purged.
        enabled: ``False`` on ranks other than 0: nothing is written.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        loss_names: Sequence[str],
        history: Sequence[Mapping[str, Any]] = (),
        start_step: int = 0,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.columns = [*_FIRST, *(f"loss_{name}" for name in loss_names), *_LAST]
        self.path = run_dir / METRICS_FILENAME
        self._writer: Any = None
        self._rows = [dict(record) for record in history]
        if not enabled:
            return
        self._write_csv()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(
            log_dir=str(run_dir / TENSORBOARD_DIRNAME),
            purge_step=start_step if start_step > 0 else None,
        )

    def iteration(self, step: int, values: Mapping[str, float]) -> None:
        """Per-iteration scalars (``train/<name>``)."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"train/{name}", value, step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's row to the CSV and its scalars to TensorBoard."""
        if not self.enabled:
            return
        self._rows.append(dict(record))
        self._write_csv()
        if self._writer is None:
            return
        step = int(record["step"])
        for key, value in record.items():
            if key in ("epoch", "step") or value is None:
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}"
            self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()

    def _write_csv(self) -> None:
        """Rewrite the whole CSV through a temporary file: readers never see half a row."""
        with (
            atomic_path(self.path) as tmp,
            tmp.open("w", newline="", encoding="utf-8") as stream,
        ):
            table = csv.DictWriter(stream, fieldnames=self.columns, extrasaction="ignore")
            table.writeheader()
            for row in self._rows:
                table.writerow({k: _cell(row.get(k)) for k in self.columns})

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
