"""Probe: does ALIKED's dense network (backbone + score map, ~90% of its time) export to ONNX and
run in ONNX Runtime and OpenVINO, and how fast against torch eager? (Not wired into the extractor
yet: see docs/benchmarks.md.)  uv run python benchmarks/probe_aliked_compiled.py
"""

import io
import tempfile
import time
import warnings

ONNX_PATH = tempfile.mkdtemp() + "/aliked_dense.onnx"
import numpy as np
import torch
from torch import nn

from wildreid.matching.extractors import ExtractorConfig, build_extractor

ex = build_extractor(ExtractorConfig(name="aliked", device="cpu"))
model = ex.model


class Dense(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.extract_dense_map(x)


dense = Dense(model).eval()
x = torch.rand(1, 3, 384, 512)
buf = io.BytesIO()
t = time.time()
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            dense,
            (x,),
            buf,
            dynamo=False,
            input_names=["image"],
            output_names=["feat", "score"],
            dynamic_axes={"image": {2: "h", 3: "w"}},
            opset_version=19,
        )
    print("export ok", round(time.time() - t, 1), "s", len(buf.getvalue()) / 1e6, "MB", flush=True)
except Exception as e:
    print("export FAILED", type(e).__name__, str(e)[:300])
    raise SystemExit
open(ONNX_PATH, "wb").write(buf.getvalue())
with torch.inference_mode():
    ref = dense(x)


def timeit(f, n=3):
    best = 1e9
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


with torch.inference_mode():
    tt = timeit(lambda: dense(x))
    tfull = timeit(lambda: model(x))
print(
    f"torch dense {tt * 1000:.0f} ms, full forward (dense+dkd+desc) {tfull * 1000:.0f} ms",
    flush=True,
)
try:
    import onnxruntime as ort

    s = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    out = s.run(None, {"image": x.numpy()})
    print(
        "ort diff",
        float(np.abs(out[0] - ref[0].numpy()).max()),
        float(np.abs(out[1] - ref[1].numpy()).max()),
    )
    print(
        f"ort dense {timeit(lambda: s.run(None, {'image': x.numpy()})) * 1000:.0f} ms", flush=True
    )
except Exception as e:
    print("ort FAILED", type(e).__name__, str(e)[:300], flush=True)
try:
    import openvino as ov

    c = ov.Core().compile_model(ONNX_PATH, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request()
    out = r.infer([x.numpy()])
    o0 = out[c.output(0)]
    o1 = out[c.output(1)]
    print(
        "ov diff",
        float(np.abs(o0 - ref[0].numpy()).max()),
        float(np.abs(o1 - ref[1].numpy()).max()),
    )
    print(f"ov dense {timeit(lambda: r.infer([x.numpy()])) * 1000:.0f} ms", flush=True)
except Exception as e:
    print("ov FAILED", type(e).__name__, str(e)[:300], flush=True)
