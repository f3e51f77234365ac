"""``wildreid export``: a zoo model or trained checkpoint as a verified ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import WeightsOpt
from wildreid.cli.output import echo_json, stdout_console
from wildreid.errors import ConfigError

__all__ = ["export"]


def export(
    model: Annotated[
        str,
        typer.Argument(
            help="Registered name (see `wildreid models list`), timm/<name>, hf-hub:<repo>, "
            "or a checkpoint file / run folder."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="File to write.", dir_okay=False)],
    format_: Annotated[str, typer.Option("--format", help="Output format: onnx.")] = "onnx",
    weights: WeightsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
) -> None:
    """Export a model with a dynamic batch, its card and embedding space in the file's metadata,
    after checking the exported graph against torch (a model that fails is not written)."""
    import dataclasses

    from wildreid.models.factory import load_model  # deferred: imports torch
    from wildreid.models.onnx_export import EXPORT_FORMATS, export_onnx

    if format_ not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format_!r}; choose one of {EXPORT_FORMATS}")
    loaded = load_model(model, device="cpu", weights=weights)
    check = export_onnx(loaded.module, out, space=loaded.space, card=loaded.card)
    if as_json:
        echo_json({"out": str(out), "space": dataclasses.asdict(loaded.space),
                   **dataclasses.asdict(check)})  # fmt: skip
        return
    stdout_console().print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n"
        f"check against torch: {check.describe()}\n"
        f"space: {loaded.space.describe()}\n"
        f"use it: wildreid embed METADATA --model {out} --runtime openvino --out vectors.npz",
        highlight=False,
    )
