"""The HTTP service: :func:`create_app` builds a FastAPI app over one catalogue.

- ``GET /health``; the JSON API under ``/api`` (OpenAPI spec at ``/openapi.json``, docs at
  ``/docs``); the review web UI under ``/`` and ``/ui``.
- Reads are open; every write (upload + identify, enrolment, decisions, curation) needs the API
  key: ``X-API-Key: KEY`` (or ``Authorization: Bearer KEY``) for the API; the web UI asks for it
  once and keeps it in a signed session cookie, and its forms carry a CSRF token. A server
  started without a key is read-only.
- Uploads are limited in bytes (``max_upload_bytes``, also checked on ``Content-Length`` before
  reading) and pixels (``max_pixels``, checked from the header before decoding); file names are
  never used as paths, and names that try to be one are refused.
- Errors are JSON ``{"error": <class>, "detail": <message>}`` with a status code by class
  (:data:`STATUS_BY_ERROR`); the web UI shows them as a page.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from wildreid.catalogue import Catalogue
from wildreid.data.images import DEFAULT_MAX_PIXELS
from wildreid.errors import (
    CatalogueError,
    ConfigError,
    DataError,
    DuplicateError,
    EmbeddingSpaceError,
    NotFoundError,
    WildReIDError,
)
from wildreid.service.jobs import JobRunner

if TYPE_CHECKING:
    from wildreid.matching.rerank import RerankConfig

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "STATUS_BY_ERROR",
    "ServiceError",
    "ServiceState",
    "create_app",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest accepted photo upload (25 MiB)."""
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000
"""Largest accepted photo upload in pixels (a 50-megapixel camera)."""
MAX_BATCH_FILES = 500

STATUS_BY_ERROR: tuple[tuple[type[WildReIDError], int], ...] = (
    (NotFoundError, 404),
    (DuplicateError, 409),
    (EmbeddingSpaceError, 409),
    (CatalogueError, 409),
    (DataError, 422),
    (ConfigError, 422),
)
"""Status code of each error class (first match wins); anything else is 500."""

_HERE = Path(__file__).parent
_BAD_NAME = re.compile(r"[/\\\x00]|^\.\.?$|^\s*$")


class ServiceError(WildReIDError):
    """An HTTP-level refusal (authentication, limits, bad file names) with its status code."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class ServiceState:
    """What every route needs: the catalogue, the key, the jobs and the limits."""

    catalogue: Catalogue
    api_key: str | None
    jobs: JobRunner
    max_upload_bytes: int
    templates: Jinja2Templates
    rerank: RerankConfig | None = None

    def rerank_for(self, method: str, shortlist: int | None) -> RerankConfig | None:
        """The re-ranking of a request: ``""`` the server's default (``--rerank``), ``none``
        global scores only, else a method name (with ``shortlist`` overriding its default).

        Raises:
            ConfigError: an unknown method (422, the known ones named).
        """
        from wildreid.catalogue.local import resolve_rerank

        method = method.strip()
        if method.lower() == "none":
            return resolve_rerank(None, shortlist=shortlist)
        if not method:
            if self.rerank is None:
                return resolve_rerank(None, shortlist=shortlist)
            return resolve_rerank(self.rerank, shortlist=shortlist)
        return resolve_rerank(method, shortlist=shortlist)

    def key_matches(self, offered: str | None) -> bool:
        """Constant-time comparison with the configured key (False when none is configured)."""
        if self.api_key is None or not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.api_key.encode())

    def require_key(self, request: Request) -> None:
        """Raise 401/403 unless the request carries the API key."""
        if self.api_key is None:
            raise ServiceError(
                "this server is read-only; restart it with --api-key KEY to allow changes", 403
            )
        offered = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if not offered and auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        if not self.key_matches(offered):
            raise ServiceError("this change needs the API key (header X-API-Key)", 401)

    def read_upload(self, upload: UploadFile) -> tuple[str, bytes]:
        """The upload's safe file name and bytes, within the size limit.

        Raises:
            ServiceError: a file name that is a path (400), an empty file (400), or one over the
                limit (413).
        """
        name = upload.filename or "upload"
        if _BAD_NAME.search(name) or ".." in name:
            raise ServiceError(
                f"file name {name!r} is not a plain file name (no folders, '..' or NUL); "
                "rename the file",
                400,
            )
        data = upload.file.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise ServiceError(
                f"{name}: larger than the upload limit of {self.max_upload_bytes} bytes", 413
            )
        if not data:
            raise ServiceError(f"{name}: the file is empty", 400)
        return name, data


def status_of(exc: Exception) -> int:
    """The HTTP status of an exception."""
    if isinstance(exc, ServiceError):
        return exc.status_code
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return path == "/" or path.startswith("/ui")


def create_app(
    catalogue: Catalogue | str | os.PathLike[str],
    *,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
    session_secret: str | None = None,
    device: str = "cpu",
    runtime: str = "auto",
    rerank: str | None = None,
    shortlist: int | None = None,
) -> FastAPI:
    """The FastAPI app over ``catalogue`` (an open :class:`Catalogue` or its folder).

    Args:
        api_key: the key writes need; ``None`` makes the service read-only.
        max_upload_bytes: largest upload accepted (413 above).
        max_pixels: largest photo in pixels (422 above, checked before decoding).
        session_secret: signs the web UI's session cookie (random per process by default, so
            sessions end with the process).
        device, runtime: where and with which inference runtime an opened-by-path catalogue
            embeds (``auto``: the fastest measured on a CPU).
        rerank, shortlist: the default local re-ranking of identify requests (``sift``, ...;
            ``None``: global scores only); a request may ask for another or ``none``.

    Raises:
        ConfigError: a short API key or an unknown re-ranking method.
    """
    if api_key is not None and len(api_key) < 8:
        raise ConfigError("the API key must be at least 8 characters long")
    from wildreid.catalogue.local import resolve_rerank

    default_rerank = resolve_rerank(rerank, shortlist=shortlist)
    if isinstance(catalogue, Catalogue):
        cat = catalogue
        owns = False
    else:
        cat = Catalogue.open(catalogue, device=device, runtime=runtime, max_pixels=max_pixels)
        owns = True
    cat.max_pixels = min(cat.max_pixels, max_pixels, DEFAULT_MAX_PIXELS)
    state = ServiceState(
        catalogue=cat,
        api_key=api_key,
        jobs=JobRunner(),
        max_upload_bytes=max_upload_bytes,
        templates=Jinja2Templates(directory=str(_HERE / "templates")),
        rerank=default_rerank,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.jobs.shutdown()
        if owns:
            cat.close()

    app = FastAPI(
        title="wildreid",
        summary="Re-identify individual animals: a catalogue, identification and review.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = state
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret or secrets.token_hex(32),
        session_cookie="wildreid_session",
        same_site="strict",
        https_only=False,
        max_age=12 * 3600,
    )

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        limit = state.max_upload_bytes * MAX_BATCH_FILES // 10 + 1024 * 1024
        if length is not None and length.isdigit() and int(length) > limit:
            return _error_response(
                request, ServiceError(f"request body over the limit of {limit} bytes", 413)
            )
        return await call_next(request)

    @app.exception_handler(WildReIDError)
    async def library_error(request: Request, exc: WildReIDError) -> Response:
        return _error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error_response(request, ConfigError(f"invalid request: {problems}"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(request, ServiceError(str(exc.detail), exc.status_code))

    from wildreid.service import api, ui

    app.include_router(api.router)
    app.include_router(ui.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    return app


def _error_response(request: Request, exc: Exception, status: int | None = None) -> Response:
    code = status or status_of(exc)
    if code >= 500:
        logger.error("request %s failed: %s", request.url.path, exc)
    if _wants_html(request):
        state: ServiceState = request.app.state.service
        return state.templates.TemplateResponse(
            request,
            "error.html",
            {"status": code, "error": type(exc).__name__, "detail": str(exc)},
            status_code=code,
        )
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=code)


def state_of(request: Request) -> ServiceState:
    """The app's :class:`ServiceState`."""
    service: ServiceState = request.app.state.service
    return service


def html(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    """Render a UI template with the session's login and CSRF token."""
    state = state_of(request)
    session = request.session
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    response: HTMLResponse = state.templates.TemplateResponse(
        request,
        template,
        {
            "logged_in": bool(session.get("authed")),
            "who": session.get("who", ""),
            "csrf": session["csrf"],
            "read_only": state.api_key is None,
            **context,
        },
    )
    return response
