"""``wildreid models``: the model zoo and its cards."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from wildreid.cli.output import echo_json, stdout_console
from wildreid.models.cards import DEFAULT_MODEL

__all__ = ["app"]

app = typer.Typer(help="List models and show their cards.", no_args_is_help=True)


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every registered model with its card (no weights are loaded)."""
    from rich.table import Table

    from wildreid.models.factory import list_models  # deferred: imports torch

    cards = list_models()
    if as_json:
        echo_json([dataclasses.asdict(card) for card in cards])
        return
    table = Table(
        "name", "dim", "input", "mean / std", "licence", "weights", "sha256", title="models"
    )
    for card in cards:
        h, w = card.input_size
        name = f"{card.name} (default)" if card.name == DEFAULT_MODEL else card.name
        table.add_row(
            name,
            str(card.embedding_dim),
            f"{h}x{w} {card.crop_mode}",
            f"{_triple(card.mean)} / {_triple(card.std)}",
            card.licence,
            card.weights_source,
            (card.weights_sha256 or "at load")[:16],
        )
    stdout_console().print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One model's card."""
    from wildreid.models.factory import model_card  # deferred: imports torch

    card = dataclasses.asdict(model_card(name))
    if as_json:
        echo_json(card)
        return
    console = stdout_console()
    for key, value in card.items():
        console.print(f"{key}: {value}", highlight=False)


def _triple(values: tuple[float, float, float]) -> str:
    return ",".join(f"{v:.3g}" for v in values)
