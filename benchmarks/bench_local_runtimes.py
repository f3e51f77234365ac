"""Local features per runtime: ALIKED / DISK extraction and LightGlue matching on real images.

Extraction: ``--images`` images spread over a dataset (``images/`` + ``metadata.csv``), fitted
to the working size as the re-ranker does, run through ``build_extractor(runtime=...)`` for each
runtime in interleaved rounds (a busy machine slows every runtime alike); the best round's
images/s is reported with the share of torch's keypoints the runtime finds at the same place and
the smallest descriptor cosine there. Compile time (first use: export, check, compile) apart.

LightGlue (ALIKED weights): up to ``--pairs`` pairs of those images (half of them two images of
one individual), matched by kornia's adaptive LightGlue in torch (early exit and point pruning,
the matcher's default), the same under bfloat16 autocast, by the same network at fixed depth in
torch (all 9 layers, no pruning), and by that fixed-depth network exported to ONNX (dynamic
keypoint counts) in ONNX Runtime and OpenVINO.
Reported: pairs/s (best of interleaved rounds), mean matches per pair, and the overlap (Jaccard
index of the match sets) with the adaptive torch matches.

``--upscale`` enlarges every image to the re-ranker's working size (512 px long side) before
extraction: the size of photos larger than the crops of the shared datasets.

Run single-threaded to compare runtimes on equal terms (``--threads``, default 1):

    uv run python benchmarks/bench_local_runtimes.py --data /work/shared/datasets/LionData
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from bench_runtimes import cpu_model
from PIL import Image
from torch import nn

from wildreid.matching.extractors import ExtractorConfig, build_extractor
from wildreid.matching.matchers import LightGlueMatcher, MatcherConfig
from wildreid.models.runtimes import openvino_core, runtime_version
from wildreid.types import LocalFeatures

RUNTIMES = ("torch", "onnxruntime", "openvino")


def load_images(data: Path, n: int) -> tuple[list[Image.Image], list[str]]:
    """``n`` images: two of each of ``n / 2`` individuals spread evenly over the dataset's
    individuals that have two or more, with their identities."""
    table = pd.read_csv(data / "metadata.csv")
    table = table[table["identity"] != "unknown"]
    twice = table.groupby("identity").head(2)
    twice = twice[twice.groupby("identity")["path"].transform("size") == 2]
    names = twice["identity"].drop_duplicates().to_list()
    picked = [names[int(i)] for i in np.linspace(0, len(names) - 1, n // 2).round()]
    rows = twice.set_index("identity").loc[picked].reset_index()
    images = [Image.open(data / p).convert("RGB") for p in rows["path"]]
    return images, [str(i) for i in rows["identity"]]


def bench_extraction(name: str, images: list[Image.Image], rounds: int, upscale: bool) -> None:
    extractors, compile_s = {}, {}
    for runtime in RUNTIMES:
        start = time.perf_counter()
        config = ExtractorConfig(name=name, runtime=runtime, upscale=upscale)
        extractors[runtime] = build_extractor(config)
        extractors[runtime].extract(images[0])  # compiles on first use
        compile_s[runtime] = time.perf_counter() - start
    best = dict.fromkeys(RUNTIMES, 0.0)
    features: dict[str, list[LocalFeatures]] = {}
    for _ in range(rounds):
        for runtime, extractor in extractors.items():
            start = time.perf_counter()
            features[runtime] = [extractor.extract(image) for image in images]
            best[runtime] = max(best[runtime], len(images) / (time.perf_counter() - start))
    for runtime in RUNTIMES:
        same, cosines = [], []
        for a, b in zip(features["torch"], features[runtime], strict=True):
            if not len(a) or not len(b):
                continue
            d = np.linalg.norm(a.keypoints[:, None] - b.keypoints[None], axis=2)
            near = d.min(axis=1) < 0.01
            same.append(near.mean())
            j = d.argmin(axis=1)[near]
            da, db = a.descriptors[near], b.descriptors[j]
            cos = (da * db).sum(1) / np.linalg.norm(da, axis=1) / np.linalg.norm(db, axis=1)
            cosines.append(cos.min() if len(cos) else 1.0)
        print(f"| {name} | {runtime} | {best[runtime]:.2f} | {best[runtime] / best['torch']:.2f}x"
              f" | {np.mean(same):.4f} | {np.min(cosines):.5f} | {compile_s[runtime]:.1f} |",
              flush=True)  # fmt: skip


class FixedDepthLightGlue(nn.Module):
    """kornia's LightGlue at fixed depth (all layers), without pruning, written with reshapes the
    ONNX exporter can follow (kornia's ``unflatten(-1, (heads, -1, 3))`` and in-place writes
    into the assignment matrix do not export): normalised keypoints ``(1, N, 2)``,
    ``(1, M, 2)`` and descriptors ``(1, N, 128)``, ``(1, M, 128)`` -> the log assignment's
    match part ``(1, N, M)`` (all that ``filter_matches`` reads). Same weights, same maths."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.m = model
        self.heads = model.conf.num_heads
        self.dim = model.conf.descriptor_dim

    def _posenc(self, kpts: torch.Tensor) -> torch.Tensor:
        """kornia's LearnableFourierPositionalEncoding: (2, 1, 1, N, head_dim)."""
        projected = self.m.posenc.Wr(kpts)  # (1, N, head_dim / 2)
        pairs = [torch.stack([t, t], dim=-1).reshape(1, 1, -1, self.dim // self.heads)
                 for t in (torch.cos(projected), torch.sin(projected))]  # fmt: skip
        return torch.stack(pairs, 0)

    def _rotary(self, encoding: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        half = x.reshape(1, self.heads, -1, self.dim // self.heads // 2, 2)
        rotated = torch.stack((-half[..., 1], half[..., 0]), dim=-1)
        rotated = rotated.reshape(1, self.heads, -1, self.dim // self.heads)
        return x * encoding[0] + rotated * encoding[1]

    def _self(self, block: Any, x: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        qkv = block.Wqkv(x).reshape(1, -1, self.heads, self.dim // self.heads, 3)
        qkv = qkv.transpose(1, 2)
        q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
        q, k = self._rotary(encoding, q), self._rotary(encoding, k)
        scale = (self.dim // self.heads) ** -0.5
        context = torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v
        message = block.out_proj(context.transpose(1, 2).reshape(1, -1, self.dim))
        return x + block.ffn(torch.cat([x, message], -1))

    def _cross(self, block: Any, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(1, -1, self.heads, self.dim // self.heads).transpose(1, 2)

        qk0, qk1 = heads(block.to_qk(x0)), heads(block.to_qk(x1))
        v0, v1 = heads(block.to_v(x0)), heads(block.to_v(x1))
        qk0, qk1 = qk0 * block.scale**0.5, qk1 * block.scale**0.5
        sim = qk0 @ qk1.transpose(-1, -2)
        m0 = torch.softmax(sim, dim=-1) @ v1
        m1 = torch.softmax(sim.transpose(-1, -2), dim=-1) @ v0
        m0 = block.to_out(m0.transpose(1, 2).reshape(1, -1, self.dim))
        m1 = block.to_out(m1.transpose(1, 2).reshape(1, -1, self.dim))
        return x0 + block.ffn(torch.cat([x0, m0], -1)), x1 + block.ffn(torch.cat([x1, m1], -1))

    def forward(self, kpts0: torch.Tensor, kpts1: torch.Tensor, desc0: torch.Tensor,
                desc1: torch.Tensor) -> torch.Tensor:  # fmt: skip
        m = self.m
        desc0, desc1 = m.input_proj(desc0), m.input_proj(desc1)
        encoding0, encoding1 = self._posenc(kpts0), self._posenc(kpts1)
        for layer in m.transformers:
            desc0 = self._self(layer.self_attn, desc0, encoding0)
            desc1 = self._self(layer.self_attn, desc1, encoding1)
            desc0, desc1 = self._cross(layer.cross_attn, desc0, desc1)
        assign = m.log_assignment[m.conf.n_layers - 1]
        mdesc0 = assign.final_proj(desc0) / self.dim**0.25
        mdesc1 = assign.final_proj(desc1) / self.dim**0.25
        sim = mdesc0 @ mdesc1.transpose(-1, -2)
        z0, z1 = assign.matchability(desc0), assign.matchability(desc1)
        certainties = nn.functional.logsigmoid(z0) + nn.functional.logsigmoid(z1).transpose(1, 2)
        scores0 = torch.log_softmax(sim, 2)
        scores1 = torch.log_softmax(sim.transpose(-1, -2), 2).transpose(-1, -2)
        return scores0 + scores1 + certainties


def _inputs(pair: tuple[LocalFeatures, LocalFeatures]) -> list[torch.Tensor]:
    from kornia.feature.lightglue import normalize_keypoints

    out = []
    for f in pair:
        size = torch.tensor([f.image_size], dtype=torch.float32)
        out.append(normalize_keypoints(torch.from_numpy(f.keypoints)[None], size))
    return [*out, *(torch.from_numpy(f.descriptors)[None] for f in pair)]


def _matches(scores: torch.Tensor, threshold: float) -> set[tuple[int, int]]:
    from kornia.feature.lightglue import filter_matches

    padded = nn.functional.pad(scores, (0, 1, 0, 1))  # the no-match row and column, unread
    m0, _, _, _ = filter_matches(padded, threshold)
    valid = torch.where(m0[0] > -1)[0]
    return {(int(i), int(m0[0, i])) for i in valid}


def export_fixed(net: nn.Module, path: Path, pair: tuple[LocalFeatures, LocalFeatures]) -> None:
    buffer = io.BytesIO()
    names = ["kpts0", "kpts1", "desc0", "desc1"]
    axes = {"kpts0": {1: "n"}, "kpts1": {1: "m"}, "desc0": {1: "n"}, "desc1": {1: "m"},
            "scores": {1: "n", 2: "m"}}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, tuple(_inputs(pair)), buffer, dynamo=False, input_names=names,  # type: ignore[arg-type]
                          output_names=["scores"], dynamic_axes=axes, opset_version=17)  # fmt: skip
    path.write_bytes(buffer.getvalue())


def bench_lightglue(images: list[Image.Image], identities: list[str], n_pairs: int,
                    rounds: int) -> None:  # fmt: skip
    extractor = build_extractor(ExtractorConfig(name="aliked", runtime="torch"))
    features = [extractor.extract(image) for image in images]
    # Alternately two images of one individual and the first images of two individuals.
    pairs = [(2 * k, 2 * k + 1) if k % 2 == 0 else (2 * k, (2 * k + 2) % len(images))
             for k in range(len(images) // 2)][:n_pairs]  # fmt: skip
    config = MatcherConfig(name="lightglue-aliked")
    adaptive = LightGlueMatcher(config, features="aliked")
    threshold = config.filter_threshold
    fixed = FixedDepthLightGlue(adaptive._modules[False]).eval()
    runs: dict[str, Any] = {}
    runs["torch adaptive"] = lambda p: {
        tuple(int(v) for v in row) for row in adaptive.match([p])[0].pairs
    }

    def torch_bf16(p: tuple[LocalFeatures, LocalFeatures]) -> set[tuple[int, int]]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return {tuple(int(v) for v in row) for row in adaptive.match([p])[0].pairs}

    runs["torch adaptive bf16 autocast"] = torch_bf16

    def torch_fixed(p: tuple[LocalFeatures, LocalFeatures]) -> set[tuple[int, int]]:
        with torch.inference_mode():
            return _matches(fixed(*_inputs(p)), threshold)

    runs["torch fixed-depth"] = torch_fixed
    folder = Path(tempfile.mkdtemp())
    first = (features[pairs[0][0]], features[pairs[0][1]])
    start = time.perf_counter()
    export_fixed(fixed, folder / "lightglue.onnx", first)
    print(f"export of fixed-depth LightGlue: {time.perf_counter() - start:.1f} s", flush=True)
    threads = torch.get_num_threads()
    import onnxruntime as ort
    import openvino as ov

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(folder / "lightglue.onnx"), options,
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    names = ["kpts0", "kpts1", "desc0", "desc1"]

    def ort_fixed(p: tuple[LocalFeatures, LocalFeatures]) -> set[tuple[int, int]]:
        feed = dict(zip(names, (t.numpy() for t in _inputs(p)), strict=True))
        return _matches(torch.from_numpy(session.run(None, feed)[0]), threshold)

    runs["onnxruntime fixed-depth"] = ort_fixed
    compiled = openvino_core(ov).compile_model(str(folder / "lightglue.onnx"), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads})  # fmt: skip
    request = compiled.create_infer_request()
    runs["openvino fixed-depth"] = lambda p: _matches(torch.from_numpy(np.array(request.infer(
        [t.numpy() for t in _inputs(p)])[compiled.output(0)])), threshold)  # fmt: skip
    chosen = [(features[i], features[j]) for i, j in pairs]
    for run in runs.values():  # warm-up
        run(chosen[0])
    best = dict.fromkeys(runs, 0.0)
    found: dict[str, list[set[tuple[int, int]]]] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            found[name] = [run(p) for p in chosen]
            best[name] = max(best[name], len(chosen) / (time.perf_counter() - start))
    reference = found["torch adaptive"]
    keypoints = np.mean([len(a) + len(b) for a, b in chosen]) / 2
    print(f"{len(chosen)} pairs, {keypoints:.0f} keypoints per image on average")
    print("| LightGlue | pairs/s | vs adaptive torch | matches per pair | overlap with adaptive |")
    print("|---|---|---|---|---|")
    for name in runs:
        overlap = np.mean([len(a & b) / len(a | b) if a | b else 1.0
                           for a, b in zip(found[name], reference, strict=True)])  # fmt: skip
        count = np.mean([len(m) for m in found[name]])
        print(f"| {name} | {best[name]:.2f} | {best[name] / best['torch adaptive']:.2f}x | "
              f"{count:.1f} | {overlap:.3f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--extractors", default="aliked,disk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-lightglue", action="store_true")
    parser.add_argument("--upscale", action="store_true",
                        help="enlarge the images to the working size (512 px)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WILDREID_CACHE_DIR", tempfile.mkdtemp())
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; {args.threads} thread(s)")
    print("versions: " + ", ".join(f"{r} {runtime_version(r)}" for r in RUNTIMES))
    images, identities = load_images(args.data, args.images)
    sizes = np.array([image.size for image in images])
    print(f"{args.data.name}: {len(images)} images, median size {np.median(sizes, axis=0)}"
          + (", enlarged to 512 px" if args.upscale else ""))  # fmt: skip
    print("| extractor | runtime | images/s | vs torch | same keypoints | min cosine | compile s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.extractors.split(","):
        if name:
            bench_extraction(name, images, args.rounds, args.upscale)
    if not args.skip_lightglue:
        bench_lightglue(images, identities, args.pairs, args.rounds)


if __name__ == "__main__":
    main()
