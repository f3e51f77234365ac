"""Local-feature speed: extraction, pair matching (one pair at a time vs batched), re-ranking.

(a) extraction: images/s of each extractor on the dataset's images (bbox crops) at the default
    working size (long side 512, never enlarged) and keypoint cap;
(b) matching: pairs/s of each matcher at 256 / 512 / 1024 keypoints per image, one pair per
    call and ``--batch`` pairs per call (LightGlue batches equal-length pairs without point
    pruning; the mutual-NN matcher pads and masks);
(c) re-ranking: seconds per query to re-rank a top-``--shortlist`` shortlist with cached
    features (matching + verification), for each method.

Rounds are interleaved (every variant once per round, best round kept) so that load from other
processes hits all variants alike; the load average and CPU model are printed. Examples::

    uv run python benchmarks/bench_local.py --metadata ../shared/datasets/LionData/metadata.csv
    uv run python benchmarks/bench_local.py --generate 64 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_model
from PIL import Image
from skimage import data

from wildreid.data.images import load_image
from wildreid.data.schema import parse_bbox, read_metadata
from wildreid.matching.extractors import build_extractor
from wildreid.matching.matchers import MatcherConfig, build_matcher
from wildreid.matching.rerank import RERANKERS, Reranker, rerank_config
from wildreid.types import LocalFeatures

EXTRACTORS = ("sift", "rootsift", "aliked", "disk")
MATCHERS = {"mnn": "sift", "lightglue-aliked": "aliked", "lightglue-disk": "disk"}


def images(args: argparse.Namespace) -> list[Image.Image]:
    if args.metadata:
        table = read_metadata(args.metadata).head(args.limit)
        root = Path(args.metadata).parent
        out = []
        for _, row in table.iterrows():
            box = parse_bbox(str(row["bbox"])) if "bbox" in row and pd.notna(row["bbox"]) else None
            out.append(load_image(root / row["path"], bbox=None if box is None else box.as_tuple()))
        return out
    base = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(args.generate):
        source = Image.fromarray(base[i % len(base)])
        angle = float(rng.uniform(-20, 20))
        out.append(source.rotate(angle, resample=Image.Resampling.BILINEAR).resize((640, 480)))
    return out


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", help="metadata CSV whose images are used")
    parser.add_argument("--limit", type=int, default=64, help="images taken from the metadata")
    parser.add_argument("--generate", type=int, default=32, help="640x480 photos without data")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=32, help="pairs per matching measurement")
    parser.add_argument("--batch", type=int, default=8, help="pairs per call when batched")
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--keypoints", default="256,512,1024")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; cores {os.cpu_count()}")
    pictures = images(args)
    print(f"{len(pictures)} images, mean size {np.mean([p.size for p in pictures], axis=0)}")

    # (a) extraction
    extractors = {name: build_extractor(name=name) for name in EXTRACTORS}
    features: dict[str, list[LocalFeatures]] = {}
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, extractor in extractors.items():
            out: list[LocalFeatures] = []
            seconds = timed(lambda e=extractor, o=out: o.extend(e.extract(p) for p in pictures))
            features[name] = out
            best[name] = max(best.get(name, 0.0), len(pictures) / seconds)
    print("\n(a) extraction, default settings (long side <= 512 px, 512 keypoints)")
    print("| extractor | images/s | mean keypoints |")
    print("|---|---|---|")
    for name in EXTRACTORS:
        kps = np.mean([len(f) for f in features[name]])
        print(f"| {name} | {best[name]:.1f} | {kps:.0f} |")

    # (b) matching at fixed keypoint counts (a large photo gives enough keypoints)
    large = Image.fromarray(data.astronaut()).resize((1024, 1024))
    warped = large.rotate(10, resample=Image.Resampling.BILINEAR)
    print(f"\n(b) matching, {args.pairs} pairs; pairs/s one pair per call vs {args.batch} per call")
    print("| matcher | keypoints | one pair per call | batched | batched / one |")
    print("|---|---|---|---|---|")
    for count in [int(k) for k in args.keypoints.split(",")]:
        for matcher_name, extractor_name in MATCHERS.items():
            extract = build_extractor(
                name=extractor_name, max_keypoints=count, working_size=1024
            ).extract
            a, b = extract(large), extract(warped)
            pairs = [(a, b)] * args.pairs
            single = build_matcher(MatcherConfig(name=matcher_name, batch_size=1))
            batched = build_matcher(MatcherConfig(name=matcher_name, batch_size=args.batch))
            speeds = {"one": 0.0, "batched": 0.0}
            single.match(pairs[:1])  # warm-up
            for _ in range(args.rounds):
                seconds = timed(lambda m=single, ps=pairs: [m.match([p]) for p in ps])
                speeds["one"] = max(speeds["one"], len(pairs) / seconds)
                step = args.batch
                seconds = timed(
                    lambda m=batched, ps=pairs, n=step: [
                        m.match(ps[i : i + n]) for i in range(0, len(ps), n)
                    ]
                )
                speeds["batched"] = max(speeds["batched"], len(pairs) / seconds)
            print(
                f"| {matcher_name} | {min(len(a), len(b))} | {speeds['one']:.1f} | "
                f"{speeds['batched']:.1f} | {speeds['batched'] / speeds['one']:.2f} |"
            )

    # (c) re-ranking a shortlist with cached features
    print(f"\n(c) re-ranking a top-{args.shortlist} shortlist with cached features")
    print("| method | seconds per query |")
    print("|---|---|")
    rng = np.random.default_rng(1)
    for method, (extractor_name, _) in RERANKERS.items():
        cached = features[extractor_name]
        n_gallery = max(args.shortlist, len(cached) - 4)
        gallery = [cached[i % len(cached)] for i in range(n_gallery)]
        queries = cached[:4]
        scores = rng.normal(size=(len(queries), n_gallery)).astype(np.float32)
        reranker = Reranker(rerank_config(method, shortlist=args.shortlist))
        per_query = min(
            timed(lambda r=reranker, s=scores, q=queries, g=gallery: r.rerank(s, q, g))
            / len(queries)
            for _ in range(args.rounds)
        )
        print(f"| {method} | {per_query:.3f} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
