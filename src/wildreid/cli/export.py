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
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantize to int8 (static, calibrated on --calibration images); the vectors "
            "get their own embedding space.",
        ),
    ] = False,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Metadata CSV of your gallery images (with --int8).",
            dir_okay=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Folder calibration image paths are relative to (default: CSV's)."),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="Images used to calibrate.")
    ] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
) -> None:
    """Export a model with a dynamic batch, its card and embedding space in the file's metadata,
    after checking the exported graph against torch (a model that fails is not written)."""
    import dataclasses

    from wildreid.models.factory import load_model  # deferred: imports torch
    from wildreid.models.onnx_export import EXPORT_FORMATS, export_onnx

    if format_ not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format_!r}; choose one of {EXPORT_FORMATS}")
    if int8 != (calibration is not None):
        raise ConfigError("--int8 needs --calibration METADATA.csv (your gallery images), and "
                          "--calibration is only used with --int8")  # fmt: skip
    loaded = load_model(model, device="cpu", weights=weights)
    space = loaded.space
    if calibration is not None:
        from wildreid.models.quantize import calibration_batches, quantize_int8
        from wildreid.pipeline import load_dataset

        frame, folder = load_dataset(calibration, root=root)
        batches = calibration_batches(frame, root=folder, space=space, n_images=calibration_images)
        space, check = quantize_int8(
            loaded.module, out, space=space, card=loaded.card, calibration=batches
        )
    else:
        check = export_onnx(loaded.module, out, space=space, card=loaded.card)
    if as_json:
        echo_json({"out": str(out), "space": dataclasses.asdict(space),
                   **dataclasses.asdict(check)})  # fmt: skip
        return
    stdout_console().print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n"
        f"check against torch: {check.describe()}\n"
        f"space: {space.describe()}\n"
        f"use it: wildreid embed METADATA --model {out} --runtime openvino --out vectors.npz",
        highlight=False,
    )
