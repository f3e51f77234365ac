"""The JSON API routes (``/health`` and ``/api/...``).

Route functions are plain ``def``: FastAPI runs them on its thread pool, so a slow embedding
never blocks the event loop, and batch jobs run on their own thread (:mod:`.jobs`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response

from wildreid.catalogue import Catalogue, Filters
from wildreid.service.app import MAX_BATCH_FILES, ServiceError, ServiceState, state_of
from wildreid.service.schemas import DecisionIn, MergeIn, RenameIn, SplitIn, UndoIn

if TYPE_CHECKING:
    from wildreid.matching.rerank import RerankConfig

__all__ = ["individual_view", "query_view", "router"]

router = APIRouter()

FiltersForm = tuple[str, str, str, str]


def _filters(species: str, location: str, date_from: str, date_to: str) -> Filters:
    return Filters(species=species, location=location, date_from=date_from, date_to=date_to)


RerankForm = Annotated[
    str,
    Form(
        description="Local re-ranking: sift, rootsift, aliked-lightglue, disk-lightglue, none; "
        "empty: the server's default (serve --rerank)."
    ),
]
ShortlistForm = Annotated[
    int | None,
    Form(
        ge=0,
        description="Gallery images matched locally (0: all); default: 1000 for sift and "
        "rootsift, 20 for LightGlue.",
    ),
]


def identify_upload(
    state: ServiceState,
    name: str,
    data: bytes,
    filters: Filters,
    rerank: RerankConfig | None = None,
) -> dict[str, Any]:
    """Identify one uploaded photo; the identification as a dict."""
    return state.catalogue.identify(data, filename=name, filters=filters, rerank=rerank).to_dict()


def individual_view(cat: Catalogue, individual_id: str) -> dict[str, Any]:
    """An individual with its images, sightings timeline and decisions."""
    individual = cat.individual(individual_id)
    return {
        "individual": individual.__dict__,
        "images": [i.__dict__ for i in cat.store.images(individual_id=individual_id)],
        "sightings": cat.sightings(individual_id),
        "decisions": [e.to_dict() for e in cat.events(individual_id=individual_id)],
    }


def query_view(cat: Catalogue, query_id: str) -> dict[str, Any]:
    """A query with its identifications and the decisions taken on it."""
    image = cat.image(query_id)
    return {
        "image": image.__dict__,
        "identifications": [r.to_dict() for r in cat.store.identifications(query_id)],
        "decisions": [e.to_dict() for e in cat.events(query_image_id=query_id)],
    }


@router.get("/health", tags=["service"])
def health(request: Request) -> dict[str, Any]:
    """Liveness and what the service holds."""
    cat = state_of(request).catalogue
    return {"status": "ok", **cat.stats(), "read_only": state_of(request).api_key is None}


@router.get("/api/stats", tags=["catalogue"])
def stats(request: Request) -> dict[str, Any]:
    """Counts of individuals, images, queries, identifications and decisions."""
    return state_of(request).catalogue.stats()


@router.post("/api/identify", tags=["identify"])
def identify(
    request: Request,
    file: Annotated[UploadFile, File(description="One photo.")],
    species: Annotated[str, Form()] = "",
    location: Annotated[str, Form()] = "",
    date_from: Annotated[str, Form()] = "",
    date_to: Annotated[str, Form()] = "",
    rerank: RerankForm = "",
    shortlist: ShortlistForm = None,
) -> dict[str, Any]:
    """Upload one photo and identify it now (it is stored as a query to decide on).

    Candidates carry ``probability`` when the catalogue is calibrated and ``local_score``,
    ``n_matches``, ``n_inliers`` when local matching ran (draw them with
    ``GET /api/queries/{query_id}/evidence/{image_id}.png``).
    """
    state = state_of(request)
    state.require_key(request)
    filters = _filters(species, location, date_from, date_to)
    config = state.rerank_for(rerank, shortlist)
    name, data = state.read_upload(file)
    return identify_upload(state, name, data, filters, config)


@router.post("/api/jobs", tags=["identify"], status_code=202)
def start_job(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Photos to identify.")],
    species: Annotated[str, Form()] = "",
    location: Annotated[str, Form()] = "",
    date_from: Annotated[str, Form()] = "",
    date_to: Annotated[str, Form()] = "",
    rerank: RerankForm = "",
    shortlist: ShortlistForm = None,
) -> dict[str, Any]:
    """Upload many photos; they are identified in the background (poll the job)."""
    state = state_of(request)
    state.require_key(request)
    config = state.rerank_for(rerank, shortlist)
    return start_batch(state, files, _filters(species, location, date_from, date_to), config)


def start_batch(
    state: ServiceState,
    files: list[UploadFile],
    filters: Filters,
    rerank: RerankConfig | None = None,
) -> dict[str, Any]:
    """Read every upload (refusing bad names and sizes first), then queue the batch."""
    if not files:
        raise ServiceError("no files uploaded", 400)
    if len(files) > MAX_BATCH_FILES:
        raise ServiceError(f"at most {MAX_BATCH_FILES} files per batch", 413)
    items = [state.read_upload(f) for f in files]
    job = state.jobs.submit(
        items, lambda name, data: identify_upload(state, name, data, filters, rerank)
    )
    return job.to_dict()


@router.get("/api/jobs/{job_id}", tags=["identify"])
def job(request: Request, job_id: str) -> dict[str, Any]:
    """A batch job's progress and results."""
    return state_of(request).jobs.get(job_id).to_dict()


@router.get("/api/queries/{query_id}", tags=["decisions"])
def query(request: Request, query_id: str) -> dict[str, Any]:
    """A query: its photo record, identifications and decisions."""
    return query_view(state_of(request).catalogue, query_id)


def evidence_method(cat: Catalogue, query_id: str, rerank: str, state: ServiceState) -> str:
    """The re-ranking method to draw a query's evidence with: the one asked for, else the one
    its latest identification used, else the server's default."""
    if rerank:
        return rerank
    for record in reversed(cat.store.identifications(query_id)):
        if record.rerank.get("method"):
            return str(record.rerank["method"])
    if state.rerank is not None:
        return state.rerank.method
    raise ServiceError(
        f"query {query_id!r} was not re-ranked; ask for a method with ?rerank=sift", 422
    )


@router.get(
    "/api/queries/{query_id}/evidence/{image_id}.png",
    tags=["decisions"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def evidence(
    request: Request,
    query_id: str,
    image_id: str,
    rerank: Annotated[str, Query(description="sift, rootsift, aliked-lightglue, ...")] = "",
    height: Annotated[int, Query(ge=64, le=1024, description="Height in pixels.")] = 240,
) -> Response:
    """The query (left) and a gallery image (right) with their matched keypoints drawn:
    inliers of the geometric model green, other matches red."""
    state = state_of(request)
    cat = state.catalogue
    cat.image(query_id)
    method = evidence_method(cat, query_id, rerank, state)
    picture = cat.evidence_image(query_id, image_id, rerank=method, height_px=height)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Response(
        buffer.getvalue(),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get("/api/calibration", tags=["catalogue"])
def calibration(request: Request) -> dict[str, Any]:
    """The catalogue's calibration (``wildreid catalogue calibrate``): what it was fitted on,
    its threshold and calibration-data metrics; 404 when there is none, 409 when it was fitted
    for another model."""
    from wildreid.catalogue.calibration import calibrator_state

    cat = state_of(request).catalogue
    found = cat.calibration()
    if found is None:
        raise ServiceError(
            "this catalogue is not calibrated; run `wildreid catalogue calibrate DIR`", 404
        )
    return calibrator_state(found)


@router.post("/api/queries/{query_id}/decisions", tags=["decisions"])
def decide(request: Request, query_id: str, body: DecisionIn) -> dict[str, Any]:
    """Record a verdict: same, different, cannot_tell or new."""
    state = state_of(request)
    state.require_key(request)
    options = body.model_dump(exclude={"verdict", "who"})
    return state.catalogue.decide(query_id, body.verdict, who=body.who, **options).to_dict()


@router.post("/api/queries/{query_id}/undo", tags=["decisions"])
def undo(request: Request, query_id: str, body: UndoIn) -> dict[str, Any]:
    """Undo the last decision on a query."""
    state = state_of(request)
    state.require_key(request)
    return state.catalogue.undo(query_id, who=body.who).to_dict()


@router.get("/api/individuals", tags=["individuals"])
def individuals(request: Request) -> list[dict[str, Any]]:
    """Every individual (merged ones left out)."""
    return [i.__dict__ for i in state_of(request).catalogue.individuals()]


@router.get("/api/individuals/{individual_id}", tags=["individuals"])
def individual(request: Request, individual_id: str) -> dict[str, Any]:
    """An individual with its images, sighting history and decisions."""
    return individual_view(state_of(request).catalogue, individual_id)


@router.post("/api/individuals/{individual_id}/images", tags=["individuals"])
def enrol(
    request: Request,
    individual_id: str,
    file: Annotated[UploadFile, File(description="A photo of this individual.")],
    species: Annotated[str, Form()] = "",
    location: Annotated[str, Form()] = "",
    date: Annotated[str, Form()] = "",
    viewpoint: Annotated[str, Form()] = "",
) -> dict[str, Any]:
    """Add a photo of a known individual (created when new); the same photo is added once."""
    state = state_of(request)
    state.require_key(request)
    name, data = state.read_upload(file)
    result = state.catalogue.enrol_file(
        data,
        individual_id=individual_id,
        filename=name,
        species=species,
        location=location,
        date=date,
        viewpoint=viewpoint,
    )
    if result.skipped:
        raise ServiceError(f"{name}: {result.skipped[0][1]}", 422)
    return {
        "added": list(result.added),
        "duplicates": [{"image_id": a, "existing": b} for a, b in result.duplicates],
    }


@router.post("/api/individuals/{individual_id}/merge", tags=["individuals"])
def merge(request: Request, individual_id: str, body: MergeIn) -> dict[str, Any]:
    """Merge ``absorb`` into this individual; fails (changing nothing) unless all moved."""
    state = state_of(request)
    state.require_key(request)
    return state.catalogue.merge(individual_id, body.absorb, who=body.who, note=body.note).to_dict()


@router.post("/api/individuals/{individual_id}/split", tags=["individuals"])
def split(request: Request, individual_id: str, body: SplitIn) -> dict[str, Any]:
    """Move some images of this individual to a new individual."""
    state = state_of(request)
    state.require_key(request)
    event = state.catalogue.split(
        individual_id,
        body.image_ids,
        who=body.who,
        new_individual_id=body.new_individual_id,
        name=body.name,
        note=body.note,
    )
    return event.to_dict()


@router.post("/api/individuals/{individual_id}/rename", tags=["individuals"])
def rename(request: Request, individual_id: str, body: RenameIn) -> dict[str, Any]:
    """Change the display name."""
    state = state_of(request)
    state.require_key(request)
    return state.catalogue.rename(individual_id, body.name, who=body.who).to_dict()


@router.get("/api/images/{image_id}", tags=["images"])
def image(request: Request, image_id: str) -> dict[str, Any]:
    """An image's record."""
    return state_of(request).catalogue.image(image_id).__dict__


@router.get("/api/images/{image_id}/file", tags=["images"], response_class=FileResponse)
def image_file(request: Request, image_id: str) -> FileResponse:
    """The stored photo."""
    path = state_of(request).catalogue.image_path(image_id)
    return FileResponse(path, headers={"Cache-Control": "private, max-age=86400"})
