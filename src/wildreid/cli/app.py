"""The ``wildreid`` command: a thin shell over the library, one sub-app per noun.

Errors from the library's tree (:class:`~wildreid.errors.WildReIDError`) become one line on stderr
and the error's ``exit_code``; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from wildreid.cli import catalogue, data, models
from wildreid.cli.demo import demo
from wildreid.cli.discover import discover
from wildreid.cli.embed import embed
from wildreid.cli.evaluate import evaluate
from wildreid.cli.experiment import app as experiment_app
from wildreid.cli.export import export
from wildreid.cli.match import match
from wildreid.cli.serve import serve
from wildreid.cli.train import train
from wildreid.cli.tune import tune
from wildreid.errors import WildReIDError

__all__ = ["app", "main"]


class _ErrorMappingGroup(TyperGroup):
    """Turns library errors into a one-line message and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context; its base type is private
        try:
            return super().invoke(ctx)
        except WildReIDError as exc:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="wildreid",
    help="Re-identify individual animals from photos of their natural markings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(catalogue.app, name="catalogue")
app.command()(embed)
app.command()(evaluate)
app.command()(discover)
app.command()(match)
app.command()(demo)
app.command()(train)
app.command()(tune)
app.command()(serve)
app.command()(export)
app.add_typer(experiment_app, name="experiment")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("wildreid").setLevel(logging.DEBUG if debug else logging.INFO)


def main() -> None:
    """Entry point of the ``wildreid`` console script."""
    app()
