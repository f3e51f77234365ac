"""Forward-pass throughput of each embedding runtime: torch eager, ONNX Runtime, OpenVINO.

For each model, the same preprocessed batch (random normalised images of the model's input size,
batch ``--batch-size``) runs through ``Embedder.embed_tensors`` with each runtime, in interleaved
rounds (so a busy machine slows every runtime alike); the best round's images/s is reported with
the largest difference of the unit vectors to torch's. The compiled runtimes run the ONNX export
that ``--runtime`` uses (compiled once into a temporary cache; compile time printed apart).

    uv run python benchmarks/bench_runtimes.py --models efficientnet-lite0,efficientnet-lite1,efficientnet-lite2
    uv run python benchmarks/bench_runtimes.py --models efficientnet-lite0 --int8 lite0-int8.onnx

``--int8 FILE`` (a ``wildreid export MODEL --int8`` file of the first model) adds rows for that
graph in OpenVINO and ONNX Runtime; its vectors live in their own space, so its "max diff" is
the int8 error, not rounding.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wildreid.models.embedder import Embedder, EmbedderConfig
from wildreid.models.factory import load_model
from wildreid.models.onnx_export import read_onnx
from wildreid.models.runtimes import runtime_version

RUNTIMES = ("torch", "onnxruntime", "openvino")


def cpu_model() -> str:
    """The ``Model name`` line of ``lscpu`` (with the AVX flags that matter)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Model name")), "?")  # fmt: skip
    flags = next((line for line in text.splitlines() if line.startswith("Flags")), "")
    simd = sorted({f for f in flags.split() if f.startswith(("avx", "amx"))})
    return f"{name} ({' '.join(simd)}), {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--int8", type=Path, help="an int8 ONNX export of the first model")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}")
    print("versions: " + ", ".join(f"{r} {runtime_version(r)}" for r in RUNTIMES))
    print("| model | runtime | images/s | vs torch | max diff to torch | compile s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for name in args.models.split(","):
            model = load_model(name)
            height, width = model.space.input_size
            batch = torch.randn(
                args.batch_size, 3, height, width, generator=torch.Generator().manual_seed(0)
            )
            embedders: dict[str, Embedder] = {}
            compile_s: dict[str, float] = {}
            for runtime in RUNTIMES:
                start = time.perf_counter()
                config = EmbedderConfig(
                    device="cpu", runtime=runtime, compiled_cache_dir=Path(cache)
                )
                embedders[runtime] = Embedder(model, config=config)
                embedders[runtime].embed_tensors(batch[:2])  # warm-up
                compile_s[runtime] = time.perf_counter() - start
            if args.int8 is not None and name == args.models.split(",")[0]:
                int8 = read_onnx(args.int8)
                for runtime in RUNTIMES[1:]:
                    start = time.perf_counter()
                    config = EmbedderConfig(device="cpu", runtime=runtime)
                    embedders[f"int8 {runtime}"] = Embedder(int8, config=config)
                    embedders[f"int8 {runtime}"].embed_tensors(batch[:2])
                    compile_s[f"int8 {runtime}"] = time.perf_counter() - start
            best = dict.fromkeys(embedders, 0.0)
            vectors: dict[str, np.ndarray] = {}
            for _ in range(args.rounds):
                for runtime, embedder in embedders.items():
                    start = time.perf_counter()
                    vectors[runtime] = embedder.embed_tensors(batch)
                    rate = len(batch) / (time.perf_counter() - start)
                    best[runtime] = max(best[runtime], rate)
            for runtime in embedders:
                diff = float(np.abs(vectors[runtime] - vectors["torch"]).max())
                print(f"| {name} | {runtime} | {best[runtime]:.1f} | "
                      f"{best[runtime] / best['torch']:.2f}x | {diff:.1e} | "
                      f"{compile_s[runtime]:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
