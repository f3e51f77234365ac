"""``wildreid catalogue``: create a catalogue, add known individuals, identify, decide, curate."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wildreid.cli.options import DeviceOpt, ModelOpt, RuntimeOpt, WeightsOpt
from wildreid.cli.output import echo_json, progress_callback, stdout_console
from wildreid.errors import ConfigError
from wildreid.models.cards import DEFAULT_MODEL

if TYPE_CHECKING:
    from wildreid.catalogue import Catalogue

__all__ = ["app"]

app = typer.Typer(
    help="A catalogue of known individuals: add, identify, decide, merge, split, export.",
    no_args_is_help=True,
)

DirArg = Annotated[Path, typer.Argument(help="The catalogue folder.", file_okay=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _default_who() -> str:
    try:
        return os.environ.get("WILDREID_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "cli"


WhoOpt = Annotated[
    str,
    typer.Option(
        "--who", help="Who decides (for the audit log) (default: $WILDREID_USER, else login)."
    ),
]
ConfidenceOpt = Annotated[
    float | None, typer.Option("--confidence", min=0.0, max=1.0, help="Your confidence, 0..1.")
]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", help="A tag, e.g. photobomb (repeatable).")
]
NoteOpt = Annotated[str, typer.Option("--note", help="A free-text note for the log.")]
RerankOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank",
        help="Re-rank the shortlist with local features: sift, rootsift, aliked-lightglue or "
        "disk-lightglue (default: global scores only).",
    ),
]
ShortlistOpt = Annotated[
    int | None,
    typer.Option(
        "--shortlist",
        min=0,
        help="Gallery images matched locally per query (0: all) (default: 1000 for sift and "
        "rootsift, 20 for the LightGlue methods).",
    ),
]


def _open(folder: Path, device: str = "cpu", runtime: str = "auto", **options: Any) -> Catalogue:
    from wildreid.catalogue import Catalogue

    return Catalogue.open(folder, device=device, runtime=runtime, **options)


@app.command()
def init(
    folder: DirArg,
    model: ModelOpt = DEFAULT_MODEL,
    weights: WeightsOpt = None,
    device: DeviceOpt = "cpu",
    runtime: RuntimeOpt = "auto",
) -> None:
    """Create an empty catalogue for one model (its embedding space is recorded)."""
    from wildreid.catalogue import Catalogue

    with Catalogue.create(
        folder,
        model=model,
        weights=str(weights) if weights else None,
        device=device,
        runtime=runtime,
    ) as cat:
        stdout_console().print(
            f"created catalogue {folder}\nspace: {cat.space.describe()}", highlight=False
        )


@app.command()
def add(
    folder: DirArg,
    metadata: Annotated[
        Path,
        typer.Option(
            "--metadata", help="Metadata CSV/TSV/Parquet, COCO JSON or folder-per-identity tree."
        ),
    ],
    root: Annotated[
        Path | None,
        typer.Option(help="Folder image paths are relative to (default: the metadata's folder)."),
    ] = None,
    species: Annotated[
        str | None, typer.Option(help="Species of every row (folder trees).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Keep rows where COLUMN=VALUE, e.g. --only md_split=train (repeatable)."),
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows committed at a time.")] = 256,
    committed_log: Annotated[
        Path | None,
        typer.Option(help="Append each committed image id to this file (to resume or audit)."),
    ] = None,
    device: DeviceOpt = "cpu",
    runtime: RuntimeOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Add photos of known individuals (identity ``unknown`` rows are skipped)."""
    from wildreid.data.importers import import_dataset

    source_root = root if root is not None else (metadata if metadata.is_dir() else metadata.parent)
    frame = import_dataset(metadata, root=source_root, species=species)
    for condition in only or []:
        column, sep, value = condition.partition("=")
        if not sep or column not in frame.columns:
            raise ConfigError(
                f"--only {condition!r}: write COLUMN=VALUE with a column of the metadata "
                f"({', '.join(frame.columns)})"
            )
        frame = frame[frame[column] == value]
    log = committed_log.open("a", encoding="utf-8") if committed_log is not None else None

    def committed(ids: Any) -> None:
        if log is not None:
            log.write("".join(f"{i}\n" for i in ids))
            log.flush()
            os.fsync(log.fileno())

    try:
        with _open(folder, device, runtime) as cat, progress_callback("enrolling") as progress:
            result = cat.enrol(
                frame,
                root=source_root,
                chunk_size=chunk_size,
                progress=progress,
                on_committed=committed,
            )
    finally:
        if log is not None:
            log.close()
    for image_id, reason in result.skipped:
        typer.echo(f"skipped {image_id}: {reason}", err=True)
    for image_id, existing in result.duplicates:
        typer.echo(f"duplicate {image_id}: the same photo is already {existing}", err=True)
    if as_json:
        echo_json(
            {
                "added": len(result.added),
                "duplicates": [list(d) for d in result.duplicates],
                "skipped": [list(s) for s in result.skipped],
                "seconds": round(result.seconds, 3),
            }
        )
        return
    stdout_console().print(
        f"added {len(result.added)} image(s), {len(result.duplicates)} duplicate(s), "
        f"{len(result.skipped)} skipped in {result.seconds:.1f} s "
        f"({len(result.added) / max(result.seconds, 1e-9):.1f} images/s)",
        highlight=False,
    )


@app.command()
def identify(
    folder: DirArg,
    images: Annotated[list[Path], typer.Argument(help="Query photos.", dir_okay=False)],
    species: Annotated[str, typer.Option(help="Only individuals of this species.")] = "",
    location: Annotated[str, typer.Option(help="Only gallery photos from this location.")] = "",
    date_from: Annotated[str, typer.Option(help="Only gallery photos on/after (YYYY-MM-DD).")] = "",
    date_to: Annotated[str, typer.Option(help="Only gallery photos on/before (YYYY-MM-DD).")] = "",
    threshold: Annotated[
        float | None, typer.Option(help="Decision threshold on the score (known/new).")
    ] = None,
    review_margin: Annotated[float, typer.Option(help="Scores this near it are review.")] = 0.0,
    candidates: Annotated[int, typer.Option(min=1, help="Individuals proposed.")] = 5,
    rerank: RerankOpt = None,
    shortlist: ShortlistOpt = None,
    device: DeviceOpt = "cpu",
    runtime: RuntimeOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Propose known individuals for each photo (stored as queries to decide on).

    With a calibration (`catalogue calibrate`) each candidate has a `probability` and the
    decision uses the calibrated threshold unless --threshold is given.
    """
    from wildreid.catalogue import DecisionPolicy, Filters
    from wildreid.catalogue.local import resolve_rerank

    filters = Filters(species=species, location=location, date_from=date_from, date_to=date_to)
    policy = DecisionPolicy(
        threshold=threshold, review_margin=review_margin, max_candidates=candidates
    )
    config = resolve_rerank(
        rerank, shortlist=shortlist
    )  # a bad method fails before anything is stored
    results = []
    with (
        _open(folder, device, runtime, policy=policy) as cat,
        progress_callback("identifying") as progress,
    ):
        for done, image in enumerate(images, start=1):
            found = cat.identify(image, filename=image.name, filters=filters, rerank=config)
            results.append(found.to_dict())
            progress(done, len(images))
    if as_json:
        echo_json([{"image": str(i), **r} for i, r in zip(images, results, strict=True)])
        return
    console = stdout_console()
    for image, result in zip(images, results, strict=True):
        console.print(
            f"{image}: query {result['query_image_id']} -> {result['decision']}"
            + (f" (filters {result['filters']})" if result["filters"] else ""),
            highlight=False,
        )
        for rank, c in enumerate(result["candidates"], start=1):
            probability = f" p={c['probability']:.3f}" if c["probability"] is not None else ""
            local = (
                f" {result['rerank']['method']} {c['n_inliers']} inliers / {c['n_matches']} matches"
                if c["local_score"] is not None
                else ""
            )
            console.print(
                f"  {rank}. {c['identity']} ({c['name']}) score {c['score']:.4f}{probability}"
                f"{local} via {c['image_id']}",
                highlight=False,
            )
        for note in result["notes"]:
            console.print(f"  note: {note}", highlight=False)
        outside = result["outside_filters"]
        if outside:
            console.print(
                f"  note: {outside['identity']} scores {outside['score']:.4f} but the filters "
                "left it out",
                highlight=False,
            )
        if result["duplicate_of"]:
            console.print(
                f"  note: the same photo is already {result['duplicate_of']}", highlight=False
            )


@app.command()
def calibrate(
    folder: DirArg,
    rerank: RerankOpt = None,
    shortlist: ShortlistOpt = None,
    calibrator: Annotated[
        str, typer.Option(help="isotonic or logistic (Platt scaling).")
    ] = "isotonic",
    target: Annotated[
        str,
        typer.Option(
            help="open_score (best balanced known/new accuracy) or false_new (at most "
            "--max-false-new of known animals called new)."
        ),
    ] = "open_score",
    max_false_new: Annotated[float, typer.Option(help="For --target false_new.")] = 0.05,
    review_margin: Annotated[
        float, typer.Option(help="Probabilities this near the threshold go to review.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the calibration carve.")] = 0,
    device: DeviceOpt = "cpu",
    runtime: RuntimeOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Fit P(same individual) and the known/new threshold on the catalogue's own photos.

    Gallery-side pairs only (a share of the individuals act as new animals; encounters stay
    whole); with --rerank, that method's local scores are calibrated and fused too. Saved in
    the catalogue (calibration.json) for its current model; identify then reports
    probabilities and decides on them. Fit it again after re-embedding or a large enrolment.
    """
    from wildreid.catalogue.calibration import calibrator_state

    with _open(folder, device, runtime) as cat, progress_callback("local features") as progress:
        calibration = cat.calibrate(
            rerank=rerank,
            shortlist=shortlist,
            kind=calibrator,
            target=target,
            max_false_new=max_false_new,
            review_margin=review_margin,
            seed=seed,
            progress=progress,
        )
    state = calibrator_state(calibration)
    if as_json:
        echo_json(state)
        return
    console = stdout_console()
    for key, value in state.items():
        console.print(f"{key}: {value}", highlight=False)


def _print_event(event: Any, as_json: bool) -> None:
    if as_json:
        echo_json(event.to_dict())
        return
    stdout_console().print(
        f"logged #{event.event_id}: {event.action} by {event.who}"
        + (f" on {event.query_image_id}" if event.query_image_id else "")
        + (f" -> {event.individual_id}" if event.individual_id else ""),
        highlight=False,
    )


def _decide(
    folder: Path,
    query: str,
    verdict: str,
    individual: str,
    who: str,
    confidence: float | None,
    tags: list[str] | None,
    note: str,
    as_json: bool,
) -> None:
    """Log a reviewer's verdict on a query and print the event (``confirm`` / ``reject``)."""
    with _open(folder) as cat:
        event = cat.decide(
            query,
            verdict,
            who=who or _default_who(),
            individual_id=individual,
            confidence=confidence,
            tags=tags or (),
            note=note,
        )
    _print_event(event, as_json)


@app.command()
def confirm(
    folder: DirArg,
    query: Annotated[str, typer.Argument(help="The query image id (from identify).")],
    individual: Annotated[str, typer.Argument(help="The individual it shows.")],
    who: WhoOpt = "",
    confidence: ConfidenceOpt = None,
    tag: TagOpt = None,
    note: NoteOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The query shows this individual: its photo joins the individual's images."""
    _decide(folder, query, "same", individual, who, confidence, tag, note, as_json)


@app.command()
def reject(
    folder: DirArg,
    query: Annotated[str, typer.Argument(help="The query image id.")],
    individual: Annotated[str, typer.Argument(help="The candidate individual.")],
    cannot_tell: Annotated[
        bool, typer.Option("--cannot-tell", help="Log 'cannot tell' instead of 'different'.")
    ] = False,
    who: WhoOpt = "",
    confidence: ConfidenceOpt = None,
    tag: TagOpt = None,
    note: NoteOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The query is not (or cannot be told to be) this individual; only logged."""
    verdict = "cannot_tell" if cannot_tell else "different"
    _decide(folder, query, verdict, individual, who, confidence, tag, note, as_json)


@app.command()
def new(
    folder: DirArg,
    query: Annotated[str, typer.Argument(help="The query image id.")],
    individual_id: Annotated[
        str | None, typer.Option("--id", help="Id of the new individual (default: generated).")
    ] = None,
    name: Annotated[str, typer.Option(help="Display name (default: the id).")] = "",
    who: WhoOpt = "",
    confidence: ConfidenceOpt = None,
    note: NoteOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The query shows an animal not in the catalogue: register a new individual."""
    with _open(folder) as cat:
        event = cat.new_individual(
            query,
            who=who or _default_who(),
            individual_id=individual_id,
            name=name,
            confidence=confidence,
            note=note,
        )
    _print_event(event, as_json)


@app.command()
def undo(
    folder: DirArg,
    query: Annotated[str, typer.Argument(help="The query image id.")],
    who: WhoOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Undo the last decision on a query."""
    with _open(folder) as cat:
        event = cat.undo(query, who=who or _default_who())
    _print_event(event, as_json)


@app.command()
def merge(
    folder: DirArg,
    keep: Annotated[str, typer.Argument(help="The individual that stays.")],
    absorb: Annotated[str, typer.Argument(help="The individual merged into it.")],
    who: WhoOpt = "",
    note: NoteOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Merge two individuals (every image of ABSORB moves to KEEP)."""
    with _open(folder) as cat:
        event = cat.merge(keep, absorb, who=who or _default_who(), note=note)
        moved = len(cat.store.images(individual_id=keep))
    _print_event(event, as_json)
    if not as_json:
        stdout_console().print(f"{keep} now has {moved} image(s)", highlight=False)


@app.command()
def split(
    folder: DirArg,
    individual: Annotated[str, typer.Argument(help="The individual to split.")],
    image_ids: Annotated[list[str], typer.Argument(help="Its images that move out.")],
    new_id: Annotated[
        str | None, typer.Option("--id", help="Id of the new individual (default: generated).")
    ] = None,
    name: Annotated[str, typer.Option(help="Display name of the new individual.")] = "",
    who: WhoOpt = "",
    note: NoteOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Move some images of an individual to a new individual."""
    with _open(folder) as cat:
        event = cat.split(
            individual,
            image_ids,
            who=who or _default_who(),
            new_individual_id=new_id,
            name=name,
            note=note,
        )
    _print_event(event, as_json)


@app.command()
def rename(
    folder: DirArg,
    individual: Annotated[str, typer.Argument(help="The individual's id.")],
    name: Annotated[str, typer.Argument(help="The new display name.")],
    who: WhoOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Change an individual's display name (its id stays)."""
    with _open(folder) as cat:
        event = cat.rename(individual, name, who=who or _default_who())
    _print_event(event, as_json)


@app.command()
def show(
    folder: DirArg,
    individual: Annotated[str, typer.Argument(help="The individual's id.")],
    as_json: JsonOpt = False,
) -> None:
    """An individual's sightings (timeline) and the decisions that built it."""
    with _open(folder) as cat:
        record = cat.individual(individual)
        sightings = cat.sightings(individual)
        events = [e.to_dict() for e in cat.events(individual_id=individual)]
    if as_json:
        echo_json({"individual": record.__dict__, "sightings": sightings, "decisions": events})
        return
    console = stdout_console()
    console.print(f"{record.individual_id} ({record.name})", highlight=False)
    for s in sightings:
        console.print(
            f"  {s['date'] or '(no date)'} {s['location'] or ''}: {', '.join(s['image_ids'])}",
            highlight=False,
        )
    for e in events:
        console.print(f"  #{e['event_id']} {e['at']} {e['action']} by {e['who']}", highlight=False)


@app.command()
def export(
    folder: DirArg,
    out: Annotated[Path, typer.Option("--out", help="Folder to write.", file_okay=False)],
) -> None:
    """Write metadata.csv (+ images), individuals.csv and decisions.jsonl."""
    with _open(folder) as cat:
        metadata = cat.export(out)
    stdout_console().print(f"wrote {metadata}", highlight=False)


@app.command()
def stats(folder: DirArg, as_json: JsonOpt = False) -> None:
    """Counts of individuals, images, queries, identifications and decisions."""
    with _open(folder) as cat:
        values = cat.stats()
    if as_json:
        echo_json(values)
        return
    console = stdout_console()
    for key, value in values.items():
        console.print(f"{key}: {value}", highlight=False)


@app.command()
def check(
    folder: DirArg,
    verify_files: Annotated[
        bool, typer.Option("--verify-files/--no-verify-files", help="Hash every image file.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check the database, files, vectors and index; exit 1 if a problem is found."""
    with _open(folder) as cat:
        report = cat.check(verify_files=verify_files)
    if as_json:
        echo_json({"ok": report.ok, "problems": list(report.problems), "notes": list(report.notes)})
    else:
        console = stdout_console()
        for problem in report.problems:
            console.print(f"problem: {problem}", highlight=False)
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
        console.print("ok" if report.ok else f"{len(report.problems)} problem(s)", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def reembed(
    folder: DirArg,
    model: ModelOpt = DEFAULT_MODEL,
    weights: WeightsOpt = None,
    device: DeviceOpt = "cpu",
    runtime: RuntimeOpt = "auto",
) -> None:
    """Embed every image with another model; the old space serves until the switch."""
    with _open(folder, device, runtime) as cat, progress_callback("re-embedding") as progress:
        space = cat.reembed(model, weights=str(weights) if weights else None, progress=progress)
    stdout_console().print(f"switched to {space.describe()}", highlight=False)
