"""Embedding throughput: the bare forward pass against the whole pipeline.

(a) forward: the network alone on pre-decoded, pre-normalised tensors (batch ``--batch-size``),
    fp32 and bf16, channels-last on and off;
(b) pipeline: ``Embedder.embed_images`` on real files (decode + crop + resize + normalise +
    forward + L2), for several worker counts, end to end (worker start-up included) and in steady
    state (from the first batch out to the last).

The ratio pipeline/forward compares (b) with (a) at the embedder's settings (fp32,
channels-last). Examples::

    uv run python benchmarks/bench_embedding.py --metadata ../shared/datasets/LionData/metadata.csv
    uv run python benchmarks/bench_embedding.py --generate 512 --workers 0,1,2
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter
from torch import Tensor

from wildreid.data.images import load_image
from wildreid.data.schema import read_metadata
from wildreid.data.transforms import decode_size, preprocess
from wildreid.models.embedder import Embedder, EmbedderConfig, SupportsEmbedding


@dataclass
class Speed:
    """Best wall-clock throughput and least CPU time per image over the rounds."""

    images_per_s: float = 0.0
    steady_per_s: float = float("nan")
    cpu_ms: float = float("inf")

    def add(self, images_per_s: float, cpu_ms: float, steady_per_s: float = float("nan")) -> None:
        self.images_per_s = max(self.images_per_s, images_per_s)
        self.cpu_ms = min(self.cpu_ms, cpu_ms)
        if math.isnan(self.steady_per_s) or steady_per_s > self.steady_per_s:
            self.steady_per_s = steady_per_s


def decoded_batch(
    model: SupportsEmbedding, metadata: pd.DataFrame, root: Path, size: int
) -> Tensor:
    """The first ``size`` images of the table, decoded and preprocessed (cycled if fewer)."""
    space = model.space
    target = decode_size(space.input_size)
    images = [
        preprocess(
            load_image(root / str(path), target_size=target),
            input_size=space.input_size,
            mean=space.mean,
            std=space.std,
            crop_mode=space.crop_mode,
        )
        for path in metadata["path"].iloc[:size]
    ]
    return torch.stack([images[i % len(images)] for i in range(size)])


def forward_throughput(
    model: SupportsEmbedding, batch: Tensor, *, channels_last: bool, bf16: bool, seconds: float
) -> tuple[float, float]:
    """(images/s, CPU ms/image) of the bare network on one pre-normalised batch."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = model.module.eval().to(memory_format=memory_format)
    batch = batch.contiguous(memory_format=memory_format)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(2):
            module(batch)  # warm-up: kernel selection, allocator
        images, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds or images == 0:
            module(batch)
            images += batch.shape[0]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return images / wall, 1000 * cpu / images


def pipeline_throughput(
    model: SupportsEmbedding, metadata: pd.DataFrame, root: Path, *, workers: int, batch_size: int
) -> tuple[float, float, float]:
    """(end-to-end images/s, steady-state images/s, CPU ms/image of this process).

    End to end includes worker start-up and the first batch; steady state runs from the first
    batch out to the last. The CPU time does not include worker processes.
    """
    marks: list[tuple[float, int]] = []

    def progress(done: int, total: int) -> None:
        marks.append((time.perf_counter(), done))

    config = EmbedderConfig(
        batch_size=batch_size, workers=workers, device="cpu", precision="fp32", channels_last=True
    )
    embedder = Embedder(model, config=config)
    _ = embedder.space  # probe the output dimension outside the timing
    start, cpu = time.perf_counter(), time.process_time()
    result = embedder.embed_images(metadata, root=root, progress=progress)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    n = len(result.embeddings)
    first_time, first_done = marks[1]  # marks[0]: after the (empty) cache lookup
    steady = (n - first_done) / (end - first_time) if end > first_time else float("nan")
    return n / (end - start), steady, 1000 * cpu / n


def generate_images(folder: Path, count: int, *, size: tuple[int, int] = (640, 480)) -> Path:
    """Write ``count`` photo-like JPEGs (smooth random colour fields) and a metadata CSV."""
    rng = np.random.default_rng(0)
    rows = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.integers(0, 256, (size[1] // 32, size[0] // 32, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        image = image.filter(ImageFilter.DETAIL)
        path = f"images/{i:05d}.jpg"
        image.save(folder / path, quality=90)
        rows.append({"image_id": f"g{i:05d}", "identity": f"id{i % 50}", "path": path})
    metadata = folder / "metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    return metadata


def load(name: str, weights: str | None) -> SupportsEmbedding:
    """The model through the factory (imported here: this script must not need it to import)."""
    from wildreid.models.factory import load_model

    return load_model(name, device="cpu", weights=weights)


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default=None, help='a weights file, or "random"')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metadata", type=Path, help="metadata CSV (images relative to it)")
    source.add_argument("--generate", type=int, metavar="N", help="generate N 640x480 JPEGs")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="per forward measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of N (forward fp32 + pipeline)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N metadata rows")
    parser.add_argument("--no-variants", action="store_true", help="skip bf16 and contiguous")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    model = load(args.model, args.weights)
    threads = torch.get_num_threads()
    print(f"model {model.space.describe()}, {threads} threads", file=sys.stderr)
    forward: dict[tuple[bool, bool], Speed] = {}
    pipeline: dict[int, Speed] = {int(w): Speed() for w in args.workers.split(",")}

    with tempfile.TemporaryDirectory(prefix="wildreid-bench-") as tmp:
        csv = args.metadata if args.metadata else generate_images(Path(tmp), args.generate)
        metadata = read_metadata(csv)
        if args.limit:
            metadata = metadata.iloc[: args.limit].reset_index(drop=True)
        batch = decoded_batch(model, metadata, csv.parent, args.batch_size)

        def measure_forward(channels_last: bool, bf16: bool) -> None:
            speed, cpu_ms = forward_throughput(
                model, batch, channels_last=channels_last, bf16=bf16, seconds=args.seconds
            )
            forward.setdefault((channels_last, bf16), Speed()).add(speed, cpu_ms)
            what = f"forward channels_last={channels_last} bf16={bf16}"
            print(f"{what}: {speed:.1f}/s, {cpu_ms:.1f} CPU ms/image", file=sys.stderr)

        for _ in range(args.rounds):  # interleaved, best of: robust to other load on the machine
            measure_forward(True, False)
            for workers, best in pipeline.items():
                total, steady, cpu_ms = pipeline_throughput(
                    model, metadata, csv.parent, workers=workers, batch_size=args.batch_size
                )
                best.add(total, cpu_ms, steady)
                what = f"pipeline workers={workers}: {total:.1f}/s ({steady:.1f}/s steady)"
                print(f"{what}, {cpu_ms:.1f} CPU ms/image", file=sys.stderr)
        if not args.no_variants:
            for channels_last, bf16 in ((True, True), (False, False), (False, True)):
                measure_forward(channels_last, bf16)

    reference = forward[True, False]
    rows = [
        (
            f"forward, {'bf16' if bf16 else 'fp32'}, {'channels_last' if cl else 'contiguous'}",
            f"{v.images_per_s:.1f}",
            "",
            f"{v.cpu_ms:.1f}",
            f"{v.images_per_s / reference.images_per_s:.2f}",
        )
        for (cl, bf16), v in forward.items()
    ]
    rows += [
        (
            f"pipeline, workers={w} ({len(metadata)} images)",
            f"{v.images_per_s:.1f}",
            f"{v.steady_per_s:.1f}",
            f"{v.cpu_ms:.1f}" + (" (main process)" if w else ""),
            f"{v.images_per_s / reference.images_per_s:.2f} "
            f"({v.steady_per_s / reference.images_per_s:.2f} steady)",
        )
        for w, v in pipeline.items()
    ]
    header = ("measurement", "images/s", "steady images/s", "CPU ms/image", "ratio to forward")
    print(table(rows, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
