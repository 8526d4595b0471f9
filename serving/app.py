"""The FastAPI app: `create_app(config)` loads the model, index and store once and serves

    GET  /health               liveness (never needs the API key)
    GET  /v1/info              model, modalities, dimension, index kind and size, limits
    POST /v1/embed             objects of one modality -> embeddings (micro-batched)
    POST /v1/search            by id, by embedding or by raw data -> neighbours with id, score, labels
    GET  /v1/objects/{id}      the stored labels and meta of one object

Every error is JSON `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}` whose loc names the field.
With ASTROFM_API_KEY set, every /v1 route needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

import astrofm
from serving.batcher import BatcherStoppedError, MicroBatcher, QueueFullError
from serving.config import ServeConfig
from serving.schemas import (
    MAX_ID_LENGTH,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    Health,
    Info,
    ObjectResponse,
    QuerySummary,
    SearchRequest,
    SearchResponse,
)
from serving.service import ApiError, Service, load_service

log = logging.getLogger("astrofm.serving")
ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 422, 503)}


def _error(status: int, loc: list, msg: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413 before anything parses them, whether or not the client
    sent Content-Length (a chunked body is counted as it arrives)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            return await self._refuse(scope, receive, send, status, "bad Content-Length" if status == 400 else
                                      f"body of {int(declared)} bytes; the limit is {self.max_bytes}")
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, 413, f"body over the limit of {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, msg: str):
        await _error(status, ["body"], msg, "body_too_large" if status == 413 else "bad_request")(scope, receive, send)


# Module level: annotations are strings here (PEP 563), resolved against the module's names.
BEARER = HTTPBearer(auto_error=False, description="the server's ASTROFM_API_KEY")


def _auth_dependency(key: str):
    expected = key.encode()

    async def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):  # constant time: no timing hint about the key
            raise ApiError(401, ("header", "authorization"), "missing or wrong API key: send "
                                                             "'Authorization: Bearer KEY'", "unauthorized")

    return require_key


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return _error(error.status, list(error.loc), error.msg, error.kind, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        # pydantic's own items, less `input` and `ctx`: echoing a large body back helps nobody.
        items = []
        for e in error.errors():
            loc = list(e.get("loc", ()))
            if e.get("type") in ("union_tag_invalid", "union_tag_not_found"):  # name the tag field itself
                loc.append(str(e.get("ctx", {}).get("discriminator", "modality")).strip("'"))
            items.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
        return JSONResponse({"detail": items}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return _error(error.status_code, ["request"], str(error.detail), "http_error", error.headers)

    @app.exception_handler(QueueFullError)
    async def busy(request: Request, error: QueueFullError):
        return _error(503, ["request"], f"busy: {error}; retry shortly", "busy", {"Retry-After": "1"})

    @app.exception_handler(BatcherStoppedError)
    async def stopped(request: Request, error: BatcherStoppedError):
        return _error(503, ["request"], str(error), "unavailable", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, ["request"], "internal error", "internal")


def _finite_rows(vectors: np.ndarray, loc_of) -> None:
    """A huge but finite input can still drive the network to inf or NaN; say which object did."""
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise ApiError(422, loc_of(int(bad[0])), "the model's embedding of this object is not finite; are its "
                                                 "values in the model's units (see /v1/info)?")


def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The app for `config`; `service` (already loaded, e.g. shared by tests) skips loading again."""
    service = dataclasses.replace(service, config=config) if service is not None else load_service(config)
    batcher = MicroBatcher(service.embed, config.batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="astrofm", version=astrofm.__version__, lifespan=lifespan,
                  description="Embeddings and similarity search with an astrofm model and index.")
    app.state.service, app.state.batcher = service, batcher
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    _install_error_handlers(app)

    @app.get("/health", response_model=Health, tags=["health"])
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    auth = [Depends(_auth_dependency(config.api_key))] if config.api_key else []
    responses = {**ERRORS, **({401: {"model": ErrorResponse}} if config.api_key else {})}
    v1 = APIRouter(prefix="/v1", dependencies=auth, responses=responses)

    @v1.get("/info", response_model=Info)
    async def info() -> dict[str, Any]:
        return {**service.info(), "batcher": vars(batcher.stats)}

    @v1.post("/embed", response_model=EmbedResponse)
    async def embed(request: Annotated[EmbedRequest, Body()]) -> dict[str, Any]:
        objects = request.objects
        if len(objects) > config.max_objects_per_request:
            raise ApiError(422, ("body", "objects"), f"{len(objects)} objects; this server takes at most "
                                                     f"{config.max_objects_per_request} per request")
        samples = [service.sample(request.modality, item, ("body", "objects", i), ("body", "modality"))
                   for i, item in enumerate(objects)]
        vectors = await batcher.submit(request.modality, samples)
        _finite_rows(vectors, lambda i: ("body", "objects", i))
        return {"modality": request.modality, "dimension": int(vectors.shape[1]),
                "ids": [item.id for item in objects], "embeddings": vectors.tolist()}

    @v1.post("/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse}})
    async def search(request: SearchRequest) -> dict[str, Any]:
        index = service.index
        if (request.target_modality or index.modality) != index.modality:
            raise ApiError(422, ("body", "target_modality"), f"this server's index holds {index.modality} "
                                                             f"embeddings, not {request.target_modality}")
        if request.k > config.max_k:
            raise ApiError(422, ("body", "k"), f"k={request.k} is above this server's limit of {config.max_k}")
        exclude = query_id = None
        if request.id is not None:
            modality = request.query_modality or index.modality
            vector, source, exclude = await asyncio.to_thread(service.stored_vector, request.id, modality)
            query, query_id = QuerySummary(kind="id", id=request.id, modality=modality, source=source), request.id
        elif request.embedding is not None:
            vector = request.embedding
            if vector.size != index.dimension:
                raise ApiError(422, ("body", "embedding"), f"has {vector.size} values but the index has "
                                                           f"dimension {index.dimension}")
            query = QuerySummary(kind="embedding", source="request")
        else:
            data = request.data
            sample = service.sample(data.modality, data, ("body", "data"), ("body", "data", "modality"))
            vector = (await batcher.submit(data.modality, [sample]))[0]
            _finite_rows(vector[np.newaxis], lambda i: ("body", "data"))
            query = QuerySummary(kind="data", id=data.id, modality=data.modality, source="model")
            query_id = data.id
        service.check_k(request.k, exclude)
        hits = await asyncio.to_thread(service.search, vector, request.k, exclude, query_id)
        return {"query": query, "index": service.index_summary(), "hits": [vars(hit) for hit in hits]}

    @v1.get("/objects/{object_id}", response_model=ObjectResponse, responses={404: {"model": ErrorResponse}})
    def get_object(object_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]) -> dict[str, Any]:
        found = service.lookup(object_id)
        if found is None:
            raise ApiError(404, ("path", "object_id"), f"object {object_id!r} is neither in the index nor in the "
                                                       f"embedding folder", "unknown_id")
        modalities, labels = found
        return {"id": object_id, "modalities": modalities, "labels": labels}

    app.include_router(v1)
    return app
