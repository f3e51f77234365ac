"""``wildreid data``: validate, import, generate, split and describe datasets."""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import BodyVisibleOpt
from wildreid.cli.output import echo_json, progress_callback, stdout_console
from wildreid.data import importers, schema, splits, stats, synthetic
from wildreid.errors import ConfigError, MetadataError

__all__ = ["app"]

app = typer.Typer(
    help="Validate, import, generate, split and describe datasets.", no_args_is_help=True
)

MetadataArg = Annotated[
    Path, typer.Argument(help="Metadata CSV (image_id, identity, path, ...).", dir_okay=False)
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Folder image paths are relative to (default: the CSV's folder)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _root_of(metadata: Path, root: Path | None) -> Path:
    return root if root is not None else metadata.parent


def _raise_problems(source: Path | str, problems: list[schema.Problem]) -> None:
    """Print every problem on stderr, then raise one MetadataError that summarises them."""
    for problem in problems:
        typer.echo(f"{source}: {problem}", err=True)
    raise MetadataError(f"{source}: {len(problems)} problem(s) found; first: {problems[0]}")


@app.command()
def validate(
    metadata: MetadataArg,
    root: RootOpt = None,
    check_files: Annotated[
        bool, typer.Option("--check-files/--no-check-files", help="Check image files exist.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check a metadata table; every problem is reported with its row and column."""
    frame = schema.read_metadata(metadata)
    problems = schema.validate_metadata(
        frame, root=_root_of(metadata, root), check_files=check_files
    )
    if as_json:
        echo_json(
            {
                "metadata": str(metadata),
                "rows": len(frame),
                "problems": [dataclasses.asdict(p) for p in problems],
            }
        )
    if problems:
        _raise_problems(metadata, problems)
    if not as_json:
        identities = frame.loc[frame["identity"] != schema.UNKNOWN_IDENTITY, "identity"].nunique()
        stdout_console().print(
            f"{metadata}: valid ({len(frame)} rows, {identities} identities)", highlight=False
        )


class ImportFormat(StrEnum):
    """Source formats of ``wildreid data import``."""

    auto = "auto"
    folders = "folders"
    table = "table"
    coco = "coco"


def _parse_column_mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError(
                f"--column {pair!r}: write it as WILDREID_COLUMN=SOURCE_COLUMN, "
                "e.g. --column identity=individual_id"
            )
        mapping[ours.strip()] = theirs.strip()
    return mapping


@app.command("import")
def import_(
    source: Annotated[
        Path, typer.Argument(help="Folder-per-identity tree, CSV/Parquet table or COCO JSON.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Metadata CSV to write.", dir_okay=False)],
    format_: Annotated[
        ImportFormat, typer.Option("--format", help="Source format (default: by its kind).")
    ] = ImportFormat.auto,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Folder the written paths are relative to (default: --out's)."),
    ] = None,
    species: Annotated[
        str | None, typer.Option(help="Species for every row (folders format).")
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(help="Table format: WILDREID_COLUMN=SOURCE_COLUMN, repeatable."),
    ] = None,
    image_dir: Annotated[
        str | None, typer.Option(help="COCO format: folder of the images, relative to --root.")
    ] = None,
    identity_field: Annotated[
        str, typer.Option(help="COCO format: annotation field holding the identity.")
    ] = "identity",
    check_files: Annotated[
        bool, typer.Option("--check-files/--no-check-files", help="Check image files exist.")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Import a dataset into a validated metadata CSV (nothing is written if it has problems)."""
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    root = root if root is not None else out.parent
    frame = importers.import_dataset(
        source,
        kind=format_.value,
        root=root,
        species=species,
        columns=_parse_column_mapping(column or []),
        image_dir=image_dir,
        identity_field=identity_field,
    )
    problems = schema.validate_metadata(frame, root=root, check_files=check_files)
    if problems:
        _raise_problems(source, problems)
    schema.write_metadata(frame, out)
    identities = frame.loc[frame["identity"] != schema.UNKNOWN_IDENTITY, "identity"].nunique()
    stdout_console().print(
        f"wrote {out}: {len(frame)} rows, {identities} identities", highlight=False
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)],
    identities: Annotated[
        int, typer.Option(help="Training identities (and test ones unless --test-identities).")
    ] = 750,
    test_identities: Annotated[
        int | None,
        typer.Option(help="Gallery / query identities (default: as many as --identities)."),
    ] = None,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    train_examples: Annotated[int, typer.Option(help="Images per train identity.")] = 3,
    gallery_examples: Annotated[int, typer.Option(help="Images per gallery identity.")] = 3,
    query_examples: Annotated[int, typer.Option(help="Images per query identity.")] = 5,
    noise_std: Annotated[
        float | None, typer.Option(help="Gaussian noise std in grey levels (default: built-in).")
    ] = None,
    body_visible: BodyVisibleOpt = False,
    workers: Annotated[
        int | None, typer.Option(help="Processes (default: all cores).", min=1)
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Generate the synthetic landmark dataset of the Landmark-Id paper."""
    config = synthetic.SynthConfig(
        identities=identities,
        test_identities=test_identities,
        size_px=size,
        seed=seed,
        train_examples=train_examples,
        gallery_examples=gallery_examples,
        query_examples=query_examples,
        body_visible=body_visible,
    )
    if noise_std is not None:
        config = dataclasses.replace(config, noise_std=noise_std)
    with progress_callback("generating identities") as progress:
        result = synthetic.generate_synthetic(
            out, config=config, workers=workers, overwrite=overwrite, progress=progress
        )
    stdout_console().print(
        f"wrote {result.root}: {result.n_images} images of {result.n_identities} identities "
        f"in {result.seconds:.1f} s\n  metadata: {result.metadata_path}\n"
        f"  split: {result.split_path}",
        highlight=False,
    )


class SplitKind(StrEnum):
    """Split kinds of ``wildreid data split``."""

    closed = "closed"
    open = "open"
    disjoint = "disjoint"
    time = "time"


class UnknownRows(StrEnum):
    """Where rows of identity ``unknown`` go."""

    exclude = "exclude"
    test = "test"


@app.command()
def split(
    metadata: MetadataArg,
    kind: Annotated[SplitKind, typer.Option("--kind", help="Split kind.")],
    out: Annotated[Path, typer.Option("--out", help="Split CSV to write.", dir_okay=False)],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    test_fraction: Annotated[
        float,
        typer.Option(help="Share sent to test (images per identity; identities for disjoint)."),
    ] = 0.5,
    new_fraction: Annotated[
        float, typer.Option(help="Open-set: share of identities seen only on the test side.")
    ] = 0.2,
    group_column: Annotated[
        str | None, typer.Option(help="Column whose groups never straddle the split.")
    ] = None,
    unknown: Annotated[
        UnknownRows, typer.Option(help="Where 'unknown' identities go.")
    ] = UnknownRows.exclude,
    cutoff: Annotated[
        dt.datetime | None,
        typer.Option(help="Time split: first test date (default: by --test-fraction)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a deterministic image_id,split CSV (train = gallery side, test = query side)."""
    frame = schema.read_metadata(metadata)
    schema.check_metadata(frame, root=metadata.parent, source=metadata, check_files=False)
    config = splits.SplitConfig(
        kind=kind.value,
        seed=seed,
        test_fraction=test_fraction,
        new_fraction=new_fraction,
        group_column=group_column,
        unknown=unknown.value,
        cutoff=cutoff,
    )
    assignment = splits.make_split(frame, config=config)
    splits.write_split(assignment, out)
    summary = splits.summarize_split(frame, assignment)
    if as_json:
        echo_json(
            {"split": str(out), "config": dataclasses.asdict(config), **dataclasses.asdict(summary)}
        )
    else:
        lines = [f"wrote {out}", *summary.lines()]
        if kind is SplitKind.time:
            lines.append(f"cutoff: {splits.time_cutoff(frame, config=config).isoformat()}")
        stdout_console().print("\n".join(lines), highlight=False)


@app.command("stats")
def stats_(
    metadata: MetadataArg,
    split_file: Annotated[
        Path | None, typer.Option("--split", help="Split CSV to count per side.")
    ] = None,
    histogram: Annotated[
        Path | None, typer.Option(help="Write a PNG histogram of images per identity.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print counts: images, identities, images per identity, species, viewpoints, splits."""
    frame = schema.read_metadata(metadata)
    split_frame = splits.read_split(split_file, metadata=frame) if split_file else None
    result = stats.dataset_stats(frame, split=split_frame)
    if histogram is not None:
        from wildreid.viz.plots import plot_identity_sizes

        plot_identity_sizes(result, histogram, title=metadata.parent.name or str(metadata))
    if as_json:
        echo_json(
            {
                **dataclasses.asdict(result),
                "identity_size_summary": result.identity_size_summary,
                "identity_size_histogram": result.identity_size_histogram,
            }
        )
        return
    _print_stats(metadata, result)


def _print_stats(metadata: Path, result: stats.DatasetStats) -> None:
    from rich.table import Table

    console = stdout_console()
    summary = result.identity_size_summary
    overview = Table(title=str(metadata), show_header=False)
    overview.add_row("images", str(result.n_images))
    overview.add_row("identities", str(result.n_identities))
    overview.add_row("unknown-identity images", str(result.n_unknown_images))
    overview.add_row(
        "images per identity",
        f"min {summary['min']:g}, median {summary['median']:g}, "
        f"mean {summary['mean']:.2f}, max {summary['max']:g}",
    )
    overview.add_row("rows with bbox", str(result.n_with_bbox))
    overview.add_row("rows with landmarks", str(result.n_with_landmarks))
    console.print(overview)
    sizes = Table("images per identity", "identities", title="identity sizes")
    for size, count in result.identity_size_histogram.items():
        sizes.add_row(str(size), str(count))
    console.print(sizes)
    for title, counts in (
        ("species", result.species),
        ("viewpoints", result.viewpoints),
        ("splits", result.splits),
    ):
        if counts:
            table = Table(title, "images", title=title)
            for value, count in counts.items():
                table.add_row(value or "(empty)", str(count))
            console.print(table)
