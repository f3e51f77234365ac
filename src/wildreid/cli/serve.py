"""``wildreid serve``: the HTTP service and review web UI over a catalogue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import DeviceOpt, RuntimeOpt

__all__ = ["serve"]


def serve(
    folder: Annotated[Path, typer.Argument(help="The catalogue folder.", file_okay=False)],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="WILDREID_API_KEY",
            help="Key that writes need (also $WILDREID_API_KEY); without one the service is "
            "read-only.",
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest photo upload in MiB.")] = 25.0,
    rerank: Annotated[
        str | None,
        typer.Option(
            "--rerank",
            help="Default local re-ranking of uploads: sift, rootsift, aliked-lightglue or "
            "disk-lightglue (a request may ask for another or none) (default: none).",
        ),
    ] = None,
    shortlist: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Gallery images matched locally (0: all) (default: 1000 for sift and rootsift, "
            "20 for LightGlue).",
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    runtime: RuntimeOpt = "auto",
) -> None:
    """Serve the catalogue: JSON API (/docs), review web UI (/), GET /health."""
    import uvicorn

    from wildreid.service import create_app

    app = create_app(
        folder,
        api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        device=device,
        runtime=runtime,
        session_secret=os.environ.get("WILDREID_SESSION_SECRET"),
        rerank=rerank,
        shortlist=shortlist,
    )
    typer.echo(
        f"serving {folder} on http://{host}:{port} "
        f"({'writes need the API key' if api_key else 'read-only: no --api-key'})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
