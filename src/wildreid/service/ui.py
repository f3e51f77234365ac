"""The review web UI: server-rendered pages, plain HTML forms, a little JavaScript for shortcuts.

Every state-changing form posts a CSRF token that must equal the session's; the session is a
signed ``SameSite=Strict`` cookie set when the user enters the API key (checked) and a name for
the audit log.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from wildreid.catalogue import Filters
from wildreid.matching.rerank import RERANKERS
from wildreid.service.api import identify_upload, individual_view, query_view, start_batch
from wildreid.service.app import ServiceError, ServiceState, html, state_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

CsrfForm = Annotated[str, Form(alias="csrf_token")]


def _require_session(request: Request, csrf_token: str) -> tuple[ServiceState, str]:
    """The state and the logged-in name; 403 without a session or with a wrong CSRF token."""
    state = state_of(request)
    session = request.session
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(expected), csrf_token):
        raise ServiceError("the form's CSRF token is missing or wrong; reload the page", 403)
    if state.api_key is None:
        raise ServiceError("this server is read-only (started without --api-key)", 403)
    if not session.get("authed"):
        raise ServiceError("enter the API key first (log in on the home page)", 401)
    return state, str(session.get("who", "web"))


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    """Login, upload and the latest queries."""
    state = state_of(request)
    cat = state.catalogue
    queries = cat.store.images(role="query")[-20:]
    return html(
        request,
        "home.html",
        {
            "stats": cat.stats(),
            "queries": list(reversed(queries)),
            "methods": sorted(RERANKERS),
            "default_rerank": state.rerank.method if state.rerank is not None else "none",
        },
    )


@router.post("/ui/login")
def login(
    request: Request,
    csrf_token: CsrfForm,
    api_key: Annotated[str, Form()],
    who: Annotated[str, Form(min_length=1, max_length=200)],
) -> Response:
    """Check the key once; the session remembers it (not the key itself)."""
    state = state_of(request)
    expected = request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(expected), csrf_token):
        raise ServiceError("the form's CSRF token is missing or wrong; reload the page", 403)
    if not state.key_matches(api_key):
        raise ServiceError("wrong API key", 401)
    request.session.clear()
    request.session.update({"authed": True, "who": who.strip(), "csrf": secrets.token_urlsafe(32)})
    return _redirect("/")


@router.post("/ui/logout")
def logout(request: Request, csrf_token: CsrfForm) -> Response:
    """End the session."""
    expected = request.session.get("csrf", "")
    if expected and hmac.compare_digest(str(expected), csrf_token):
        request.session.clear()
    return _redirect("/")


@router.post("/ui/upload")
def upload(
    request: Request,
    csrf_token: CsrfForm,
    files: Annotated[list[UploadFile], File()],
    species: Annotated[str, Form()] = "",
    location: Annotated[str, Form()] = "",
    date_from: Annotated[str, Form()] = "",
    date_to: Annotated[str, Form()] = "",
    rerank: Annotated[str, Form()] = "",
) -> Response:
    """One photo: identify now and show it; several: a background job."""
    state, _ = _require_session(request, csrf_token)
    filters = Filters(species=species, location=location, date_from=date_from, date_to=date_to)
    config = state.rerank_for(rerank, None)
    files = [f for f in files if f.filename]
    if len(files) == 1:
        name, data = state.read_upload(files[0])
        result = identify_upload(state, name, data, filters, config)
        return _redirect(f"/ui/queries/{result['query_image_id']}")
    job = start_batch(state, files, filters, config)
    return _redirect(f"/ui/jobs/{job['job_id']}")


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    """A batch's progress, with links to each query."""
    return html(request, "job.html", {"job": state_of(request).jobs.get(job_id).to_dict()})


@router.get("/ui/queries/{query_id}", response_class=HTMLResponse)
def query_page(request: Request, query_id: str) -> HTMLResponse:
    """The query beside its top candidates, the proposed decision and the decision buttons."""
    cat = state_of(request).catalogue
    view = query_view(cat, query_id)
    latest: dict[str, Any] | None = view["identifications"][-1] if view["identifications"] else None
    candidates = []
    if latest is not None:
        for candidate in latest["candidates"][:5]:
            candidates.append(
                {
                    **candidate,
                    "image_count": len(cat.store.images(individual_id=candidate["identity"])),
                }
            )
    events = view["decisions"]
    undone = {e["undoes"] for e in events if e["action"] == "undo"}
    open_events = [
        e for e in events if e["action"] not in ("undo",) and e["event_id"] not in undone
    ]
    return html(
        request,
        "query.html",
        {
            "query": view["image"],
            "result": latest,
            "candidates": candidates,
            "events": events,
            "can_undo": bool(open_events),
        },
    )


@router.post("/ui/queries/{query_id}/decide")
def decide(
    request: Request,
    query_id: str,
    csrf_token: CsrfForm,
    verdict: Annotated[str, Form()],
    individual_id: Annotated[str, Form()] = "",
    candidate_image_id: Annotated[str, Form()] = "",
    identification_id: Annotated[int | None, Form()] = None,
    name: Annotated[str, Form()] = "",
    confidence: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
    tags: Annotated[str, Form()] = "",
) -> Response:
    """A verdict from the review page; back to the page (or to the individual for same/new)."""
    state, who = _require_session(request, csrf_token)
    event = state.catalogue.decide(
        query_id,
        verdict,
        who=who,
        individual_id=individual_id or None,
        candidate_image_id=candidate_image_id,
        identification_id=identification_id,
        name=name,
        confidence=confidence,
        tags=[t for t in tags.split(",") if t.strip()],
    )
    if verdict in ("same", "new"):
        return _redirect(f"/ui/individuals/{event.individual_id}?from={query_id}")
    return _redirect(f"/ui/queries/{query_id}")


@router.post("/ui/queries/{query_id}/undo")
def undo(request: Request, query_id: str, csrf_token: CsrfForm) -> Response:
    """Undo the last decision on the query."""
    state, who = _require_session(request, csrf_token)
    state.catalogue.undo(query_id, who=who)
    return _redirect(f"/ui/queries/{query_id}")


@router.get("/ui/individuals", response_class=HTMLResponse)
def individuals_page(request: Request) -> HTMLResponse:
    """Every individual with its image count."""
    cat = state_of(request).catalogue
    rows = [
        {**i.__dict__, "images": len(cat.store.images(individual_id=i.individual_id))}
        for i in cat.individuals()
    ]
    return html(request, "individuals.html", {"individuals": rows})


@router.get("/ui/individuals/{individual_id}", response_class=HTMLResponse)
def individual_page(request: Request, individual_id: str) -> HTMLResponse:
    """Every image and sighting on a timeline, and the decisions that built the individual."""
    view = individual_view(state_of(request).catalogue, individual_id)
    return html(
        request, "individual.html", {**view, "from_query": request.query_params.get("from")}
    )
