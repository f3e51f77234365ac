"""Export an embedding model to ONNX, checked against torch, with its card and space inside.

The file has one input ``images`` ``(batch, 3, H, W)`` float32 (normalised as the card says,
dynamic batch) and one output ``features`` ``(batch, D)`` float32 (not L2-normalised, like the
torch module). Its ``metadata_props`` carry ``wildreid.format`` (:data:`FORMAT`),
``wildreid.space`` (:meth:`~wildreid.types.EmbeddingSpace.to_json`) and ``wildreid.card`` (the
model card as JSON), so vectors computed from the file land in the torch model's space and
:func:`read_onnx` can refuse a file that does not say what it is.

Before a file is written, :func:`export_onnx` runs the exported graph with ONNX Runtime on sample
inputs and compares with torch: the maximum absolute difference of the features (relative to
their largest magnitude) and the smallest cosine similarity per image. A model that fails is not
written.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wildreid.errors import ConfigError, WeightsError
from wildreid.files import atomic_path
from wildreid.models.cards import ModelCard
from wildreid.models.runtimes import import_runtime, open_graph, open_runner
from wildreid.types import EmbeddingSpace

__all__ = [
    "EXPORT_FORMATS",
    "FORMAT",
    "ExportCheck",
    "OnnxModel",
    "export_graph",
    "export_onnx",
    "onnx_model_proto",
    "read_onnx",
    "set_metadata",
]

logger = logging.getLogger(__name__)

FORMAT = "1"
"""Version of the metadata layout written in ``wildreid.format``."""
EXPORT_FORMATS = ("onnx",)
"""The formats ``wildreid export --format`` writes."""
INPUT_NAME = "images"
OUTPUT_NAME = "features"
OPSET = 17
MAX_REL_DIFF = 1e-3
"""Default bound on max |onnx - torch| / max |torch| over the check's features."""
MIN_COSINE = 0.9999
"""Default bound on the smallest cosine similarity between an image's onnx and torch vectors."""
_KEY_FORMAT, _KEY_SPACE, _KEY_CARD = "wildreid.format", "wildreid.space", "wildreid.card"


@dataclass(frozen=True)
class ExportCheck:
    """ONNX Runtime against torch on the check's sample images.

    Attributes:
        max_abs_diff: largest absolute difference of any feature.
        max_abs_feature: largest absolute torch feature (the scale of ``max_abs_diff``).
        min_cosine: smallest cosine similarity between an image's two feature vectors.
        n_images: sample images compared.
        passed: both bounds held.
    """

    max_abs_diff: float
    max_abs_feature: float
    min_cosine: float
    n_images: int
    passed: bool

    def describe(self) -> str:
        """One line for people."""
        return (
            f"max abs diff {self.max_abs_diff:.2e} (features up to {self.max_abs_feature:.3g}), "
            f"min cosine {self.min_cosine:.8f} on {self.n_images} images"
        )


@dataclass(frozen=True)
class OnnxModel:
    """An exported ONNX file with the card and space it carries (what :func:`read_onnx` returns).

    Attributes:
        path: the ``.onnx`` file.
        space: the torch model's embedding space (vectors from the file belong to it).
        card: the model card.
    """

    path: Path
    space: EmbeddingSpace
    card: ModelCard


def sample_batch(space: EmbeddingSpace, n: int = 3, *, seed: int = 0) -> torch.Tensor:
    """``n`` normalised sample images for checks: uniform noise and smooth gradients.

    Shapes:
        returns: (n, 3, H, W) float32.
    """
    height, width = space.input_size
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, height, width, generator=generator)
    ramp_y = torch.linspace(0, 1, height).view(1, height, 1)
    ramp_x = torch.linspace(0, 1, width).view(1, 1, width)
    for i in range(1, n, 2):  # every other image a smooth picture rather than noise
        images[i] = torch.cat([ramp_y.expand(1, height, width), ramp_x.expand(1, height, width),
                               (ramp_x * ramp_y).expand(1, height, width)])  # fmt: skip
    mean = torch.tensor(space.mean).view(1, 3, 1, 1)
    std = torch.tensor(space.std).view(1, 3, 1, 1)
    return (images - mean) / std


def onnx_model_proto(module: nn.Module, space: EmbeddingSpace, card: ModelCard) -> Any:
    """The ``onnx.ModelProto`` of ``module`` with a dynamic batch and our metadata.

    Raises:
        WeightsError: torch cannot export the network.
    """
    import onnx

    net = copy.deepcopy(module).eval().cpu().float()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export's, but exports
            # EfficientNet-Lite0 in 9 s where the new one takes 56 s (2 busy cores), and the
            # result is checked against torch below either way.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                net,
                (sample_batch(space, 2),),
                buffer,  # type: ignore[arg-type]  # file-like is documented
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
            )
    except Exception as exc:  # the exporter raises many kinds
        raise WeightsError(
            f"{space.model}: torch cannot export the network to ONNX: {exc}"
        ) from exc
    proto = onnx.load_from_string(buffer.getvalue())
    set_metadata(proto, space, card)
    return proto


def set_metadata(proto: Any, space: EmbeddingSpace, card: ModelCard) -> None:
    """Write our ``metadata_props`` (format, space, card) into an ``onnx.ModelProto``."""
    import onnx

    props = {
        _KEY_FORMAT: FORMAT,
        _KEY_SPACE: space.to_json(),
        _KEY_CARD: json.dumps(dataclasses.asdict(card), sort_keys=True),
    }
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "wildreid"


def export_onnx(
    module: nn.Module,
    out: str | os.PathLike[str],
    *,
    space: EmbeddingSpace,
    card: ModelCard,
    max_rel_diff: float = MAX_REL_DIFF,
    min_cosine: float = MIN_COSINE,
) -> ExportCheck:
    """Export ``module`` ((B, 3, H, W) normalised -> (B, D) features, as in
    :class:`~wildreid.models.factory.EmbeddingModel`) to ``out``, checked against torch first.

    Raises:
        WeightsError: the network cannot be exported, or the exported graph fails the check
            (then ``out`` is left as it was).
        ConfigError: onnxruntime (which runs the check) is not installed.
    """
    import onnx

    proto = onnx_model_proto(module, space, card)
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, os.fspath(tmp))
        check = check_onnx(module, tmp, space, max_rel_diff=max_rel_diff,
                           min_cosine=min_cosine)  # fmt: skip
        if not check.passed:
            raise WeightsError(
                f"{space.model}: the ONNX export does not reproduce torch ({check.describe()}; "
                f"bounds: relative diff {max_rel_diff:g}, cosine {min_cosine:g}); {out} was not "
                "written. Report this with the model name and torch/onnx versions"
            )
    logger.info("wrote %s: %s", out, check.describe())
    return check


def check_onnx(
    module: nn.Module,
    onnx_path: Path,
    space: EmbeddingSpace,
    *,
    max_rel_diff: float = MAX_REL_DIFF,
    min_cosine: float = MIN_COSINE,
    images: np.ndarray | None = None,
) -> ExportCheck:
    """Compare ONNX Runtime on ``onnx_path`` with ``module`` on ``images`` (a preprocessed
    ``(B, 3, H, W)`` batch), by default :func:`sample_batch` (3 images, a batch size other than
    the export's, so the dynamic batch is exercised)."""
    import_runtime("onnxruntime")
    batch = sample_batch(space, 3, seed=1) if images is None else torch.from_numpy(images)
    net = copy.deepcopy(module).eval().cpu().float()
    with torch.inference_mode():
        expected = net(batch).numpy().astype(np.float64)
    got = open_runner("onnxruntime", onnx_path)(batch.numpy()).astype(np.float64)
    if got.shape != expected.shape:
        raise WeightsError(
            f"{space.model}: the ONNX graph outputs {got.shape}, torch {expected.shape}"
        )
    max_abs_diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    cosines = (got * expected).sum(axis=1) / np.maximum(norms, 1e-30)
    lowest = float(cosines.min())
    passed = bool(max_abs_diff <= max_rel_diff * max(scale, 1e-12) and lowest >= min_cosine)
    return ExportCheck(max_abs_diff, scale, lowest, len(batch), passed)


def read_onnx(path: str | os.PathLike[str]) -> OnnxModel:
    """Open an ONNX file exported by wildreid and read its card and space.

    Raises:
        WeightsError: the file is missing, not ONNX, or lacks wildreid's metadata (the message
            says how to export one).
        ConfigError: the file is from a newer wildreid (unknown metadata format).
    """
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise WeightsError(f"{path}: cannot read it as an ONNX file ({exc})") from exc
    except Exception as exc:  # protobuf's DecodeError has no public base to name
        raise WeightsError(f"{path}: cannot read it as an ONNX file ({exc})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if _KEY_SPACE not in props or _KEY_CARD not in props:
        raise WeightsError(
            f"{path} has no wildreid metadata (model card and embedding space), so its vectors "
            "could not be tied to a space; export the model with `wildreid export MODEL "
            f"--format onnx --out {path.name}` (MODEL: a zoo name or a checkpoint)"
        )
    if props.get(_KEY_FORMAT) != FORMAT:
        raise ConfigError(
            f"{path}: wildreid ONNX metadata format {props.get(_KEY_FORMAT)!r} is not "
            f"{FORMAT!r}; upgrade wildreid or export the model again"
        )
    try:
        space = EmbeddingSpace.from_json(props[_KEY_SPACE])
        card = ModelCard.from_dict(json.loads(props[_KEY_CARD]))
    except (ValueError, ConfigError) as exc:
        raise WeightsError(f"{path}: its wildreid metadata is damaged ({exc})") from exc
    return OnnxModel(path=path, space=space, card=card)


def export_graph(
    module: nn.Module,
    out: str | os.PathLike[str],
    *,
    name: str,
    samples: list[torch.Tensor],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    max_rel_diff: float = MAX_REL_DIFF,
    opset: int = OPSET,
) -> float:
    """Export a network of one float32 input and several outputs to ``out``, checked first.

    The graph is traced on ``samples[0]`` and then run with ONNX Runtime on every sample (give
    shapes other than the first, so that the dynamic axes are exercised: a size the trace froze
    into the graph shows up here); each output must equal torch's within ``max_rel_diff`` times
    the largest of 1 and its largest torch magnitude. The input is named :data:`INPUT_NAME`.

    Returns:
        The largest absolute difference over the samples and outputs.

    Raises:
        WeightsError: the network cannot be exported, or the graph fails the check (then
            ``out`` is left as it was).
        ConfigError: onnxruntime (which runs the check) is not installed.
    """
    import onnx

    import_runtime("onnxruntime")
    net = copy.deepcopy(module).eval().cpu().float()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # TracerWarnings name shape reads the check below catches; the TorchScript exporter
            # is deprecated (see onnx_model_proto for why it is used).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (samples[0],),
                buffer,  # type: ignore[arg-type]  # file-like is documented
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
            )
    except Exception as exc:  # the exporter raises many kinds
        raise WeightsError(f"{name}: torch cannot export the network to ONNX: {exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {_KEY_FORMAT: FORMAT, "wildreid.network": name})
    proto.producer_name = "wildreid"
    out = Path(out)
    worst = 0.0
    with atomic_path(out) as tmp:
        onnx.save(proto, os.fspath(tmp))
        graph = open_graph("onnxruntime", tmp)
        for sample in samples:
            with torch.inference_mode():
                expected = [t.numpy() for t in net(sample)]
            got = graph(sample.numpy())
            for output, want, have in zip(output_names, expected, got, strict=True):
                if want.shape != have.shape:
                    raise WeightsError(
                        f"{name}: the ONNX graph's {output} is {have.shape} for input "
                        f"{tuple(sample.shape)}, torch's {want.shape}; {out} was not written"
                    )
                diff = float(np.abs(have - want).max())
                worst = max(worst, diff)
                if diff > max_rel_diff * max(1.0, float(np.abs(want).max())):
                    raise WeightsError(
                        f"{name}: the ONNX export does not reproduce torch ({output} differs by "
                        f"{diff:.2e} for input {tuple(sample.shape)}); {out} was not written. "
                        "Report this with the torch, kornia and onnx versions"
                    )
    logger.info("wrote %s: max abs diff %.2e on %d samples", out, worst, len(samples))
    return worst
