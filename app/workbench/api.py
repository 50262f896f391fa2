"""The workbench over HTTP: a Starlette ASGI app (``create_app``) serving the JSON API and the page.

``POST /search`` (a request as JSON: query, mode, top_k, offset, rerank, filters, fusion, profile),
``GET /indexes``, ``GET /indexes/{name}`` (what ``inspect`` shows), ``GET|POST /judgements``,
``GET /judgements/export``, ``POST /judgements/import``, ``POST /compare``, ``GET /profiles``,
``GET /healthz``, ``GET /openapi.json``, and the page at ``/``. Errors are JSON ``{"error": "..."}`` carrying
the CLI's one-line message (400 bad input, 401 no key, 404 no such index, 409 locked, 413 too large). With
an API key, every request for data (all but ``/healthz``, the schema and the page's own files) must carry
it (``Authorization: Bearer KEY`` or ``X-API-Key``). Handlers are plain functions run in the server's
thread pool over the one shared, thread-safe client per index.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

from hybrid_search.app.workbench.service import Workbench
from hybrid_search.config.errors import HybridSearchError, IndexLocked, IndexNotFound

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from hybrid_search.config.settings import Settings

__all__ = ["MAX_BODY_BYTES", "create_app", "openapi_schema"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # a search or an import larger than this is refused (413)
_OPEN = {"/healthz", "/openapi.json", "/", "/workbench.js"}  # no data: the page asks for the key itself


def _error(status: int, message: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _status(exc: HybridSearchError) -> int:
    if isinstance(exc, IndexNotFound):
        return 404
    if isinstance(exc, IndexLocked):
        return 409
    return 400


async def _body(request: Request) -> Any:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY_BYTES:
        raise _TooLarge
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _TooLarge
    try:
        return json.loads(bytes(raw) or b"{}")
    except ValueError as exc:
        raise _BadJson(str(exc)) from None


class _TooLarge(Exception):
    pass


class _BadJson(Exception):
    pass


def create_app(
    settings: Settings | None = None,
    *,
    index: str | None = None,
    api_key: str | None = None,
    profiles: dict[str, str] | None = None,
) -> Starlette:
    """The workbench as an ASGI app over ``settings`` (default: loaded as the CLI loads them), serving
    ``index`` first; mount it in any ASGI server. ``profiles``: NAME -> tune profile file, comparable on
    the page. Needs the ``serve`` extra."""
    from hybrid_search.config.extras import require

    require("starlette", extra="serve", purpose="the workbench (hybrid-search serve)")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from hybrid_search.config.settings import load_settings

    if settings is None:
        settings = load_settings()
    if index is not None:
        settings = settings.model_copy(update={"index": settings.index.model_copy(update={"name": index})})
    bench = Workbench(settings, profiles=profiles)

    def call(fn: Any, *args: Any) -> Any:
        async def run() -> Response:
            try:
                return JSONResponse(await run_in_threadpool(fn, *args))
            except HybridSearchError as exc:
                return _error(_status(exc), str(exc))
            except Exception as exc:  # a bug: JSON like every other error, and its traceback in the log
                log.exception("workbench request failed")
                return _error(500, f"unexpected {type(exc).__name__}: {exc} (the server log has the traceback)")

        return run()

    async def search(request: Request) -> Response:
        return await call(bench.search, await _body(request))

    async def indexes(request: Request) -> Response:
        return await call(lambda: [i.to_dict() for i in bench.client().indexes()])

    async def index_info(request: Request) -> Response:
        def info() -> dict[str, Any]:
            hs = bench.client(request.path_params["name"])
            stats = hs.stats()
            return {**asdict(stats), "spec": stats.spec.to_dict() if stats.spec else None}

        return await call(info)

    async def judgements(request: Request) -> Response:
        name = request.query_params.get("index")
        if request.method == "GET":
            return await call(lambda: _judged(bench, name))
        body = await _body(request)
        return await call(
            lambda: (
                bench.judgements(body.get("index") or name)
                .judge(body.get("query"), body.get("doc_id"), body.get("grade"))
                .summary()
            )
        )

    async def export(request: Request) -> Response:
        return await call(lambda: bench.judgements(request.query_params.get("index")).export())

    async def import_(request: Request) -> Response:
        body = await _body(request)
        store = bench.judgements(body.get("index"))
        return await call(
            lambda: store.import_files(body.get("queries.jsonl") or "", body.get("qrels/test.tsv") or "").summary()
        )

    async def compare(request: Request) -> Response:
        return await call(bench.compare, await _body(request))

    async def profiles_list(request: Request) -> Response:
        return JSONResponse(sorted(bench.profiles))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    async def page(request: Request) -> Response:
        html = resources.files("hybrid_search.app.workbench").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html.replace("__INDEX__", json.dumps(settings.index.name)))

    async def script(request: Request) -> Response:
        js = resources.files("hybrid_search.app.workbench").joinpath("static/workbench.js").read_text("utf-8")
        return PlainTextResponse(js, media_type="text/javascript")

    async def guard(request: Request, call_next: Any) -> Response:
        if api_key and request.url.path not in _OPEN:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return _error(401, "this workbench needs its API key: send it as 'Authorization: Bearer KEY'")
        try:
            response: Response = await call_next(request)
            return response
        except _TooLarge:
            return _error(413, f"the request body is over {MAX_BODY_BYTES:,} bytes: send less")
        except _BadJson as exc:
            return _error(400, f"the request body is not JSON ({exc})")

    routes = [
        Route("/", page),
        Route("/workbench.js", script),
        Route("/healthz", healthz),
        Route("/openapi.json", openapi),
        Route("/search", search, methods=["POST"]),
        Route("/indexes", indexes),
        Route("/indexes/{name}", index_info),
        Route("/judgements", judgements, methods=["GET", "POST"]),
        Route("/judgements/export", export),
        Route("/judgements/import", import_, methods=["POST"]),
        Route("/compare", compare, methods=["POST"]),
        Route("/profiles", profiles_list),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # the first index's models load while the page opens, so its first search measures searching
        threading.Thread(target=bench.warm_up, name="workbench-warm-up", daemon=True).start()
        yield
        bench.close()  # the models and connections of every client the requests opened

    app = Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)], lifespan=lifespan)
    app.state.workbench = bench
    return app


def _judged(bench: Workbench, index: str | None) -> dict[str, Any]:
    judged = bench.judgements(index).load()
    return {
        **judged.summary(),
        "folder": str(bench.judgements(index).folder),
        "queries": [
            {"id": q, "text": t, "judged": dict(judged.qrels.get(q, {}))} for q, t in sorted(judged.queries.items())
        ],
    }


def openapi_schema() -> dict[str, Any]:
    """The API's OpenAPI 3.1 description (paths, request bodies, the error shape)."""
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    search = {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string"},
            "index": {"type": "string"},
            "mode": {"type": "string", "description": "bm25, knn, sparse, hybrid, hybrid3..., optionally +rerank"},
            "top_k": {"type": "integer", "minimum": 1},
            "offset": {"type": "integer", "minimum": 0},
            "rerank": {"type": "boolean"},
            "filters": {"type": "object", "description": '{"field": value | [values] | {"gte": low, "lt": high}}'},
            "fusion": {
                "type": "object",
                "properties": {"method": {"enum": ["rrf", "linear"]}, "k": {"type": "integer"}},
            },
            "profile": {"type": "string"},
            "explain": {"type": "boolean", "description": "each hit's rank in every leg (default true)"},
        },
    }
    judgement = {
        "type": "object",
        "required": ["query", "doc_id", "grade"],
        "properties": {
            "index": {"type": "string"},
            "query": {"type": "string"},
            "doc_id": {"type": "string"},
            "grade": {"type": ["integer", "null"], "enum": [0, 1, 2, None]},
        },
    }

    def op(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "error", "content": {"application/json": {"schema": error}}},
            },
        }
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return out

    return {
        "openapi": "3.1.0",
        "info": {"title": "hybrid-search workbench", "version": "1"},
        "components": {"securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/search": {"post": op("search one index", search)},
            "/indexes": {"get": op("every index, as `hybrid-search indexes` lists them")},
            "/indexes/{name}": {"get": op("one index, as `hybrid-search inspect` shows it")},
            "/judgements": {
                "get": op("the judged queries"),
                "post": op("judge one hit (grade null removes)", judgement),
            },
            "/judgements/export": {"get": op("queries.jsonl and qrels/test.tsv")},
            "/judgements/import": {"post": op("merge judgement files", {"type": "object"})},
            "/compare": {"post": op("two profiles on the judged queries", {"type": "object"})},
            "/profiles": {"get": op("the profiles the page can show and compare")},
            "/healthz": {"get": op("liveness")},
        },
    }
