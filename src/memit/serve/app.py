"""The playground's HTTP side: a thin JSON API over a Session, and the page's own files.

Starlette and uvicorn, because they are small, well kept, and enough: a handful of routes, a
file response, a body read with a size limit. FastAPI would add pydantic and an OpenAPI layer
that a page with one user does not need; a framework with templates would add a second way of
building the page. The page is plain HTML and JavaScript in ``static/``, served from the
package, so it works offline and loads nothing from a CDN.

Errors are JSON ``{"error": one line}``: 400 for bad input (the CLI's own messages), 409 while
an edit holds the model, 413 for an upload over the limit, 404 for what does not exist.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from memit.requests import RequestError
from memit.serve.session import Busy, Session, parse

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
STATIC = Path(str(resources.files("memit") / "serve" / "static"))


class TooLarge(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes whether or not a length was announced."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"upload of {int(declared):,} bytes is larger than the {limit:,}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"upload is larger than the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request, limit: int) -> dict:
    raw = await _body(request, limit)
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise RequestError("request body must be a JSON object")
    return data


def create_app(session: Session, *, max_upload: int = MAX_UPLOAD_BYTES) -> Starlette:
    def guarded(fn):
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except TooLarge as e:
                return _error(413, str(e))
            except Busy as e:
                return _error(409, str(e))
            except RequestError as e:
                return _error(400, str(e))
        return endpoint

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def info(request: Request) -> Response:
        return JSONResponse(session.info())

    async def check(request: Request) -> Response:
        """Parse facts without editing: the records the page will send, and the bad ones."""
        body = await _json(request, max_upload)
        cases, errors = parse(str(body.get("text", "")), str(body.get("name") or "upload"))
        return JSONResponse({"facts": [_fact(c) for c in cases], "errors": errors}, status_code=400 if errors else 200)

    async def edit(request: Request) -> Response:
        body = await _json(request, max_upload)
        cases, errors = parse(str(body.get("text", "")), str(body.get("name") or "upload"))
        if errors:
            return JSONResponse({"error": errors[0]["error"], "errors": errors}, status_code=400)
        job = session.start_edit(cases)
        return JSONResponse({"job": job.view()}, status_code=202)

    async def cancel(request: Request) -> Response:
        return JSONResponse({"cancelling": session.cancel()})

    async def probe(request: Request) -> Response:
        body = await _json(request, 64 * 1024)
        k = body.get("k", 5)
        if not isinstance(k, int) or not 1 <= k <= 50:
            raise RequestError("k must be a whole number from 1 to 50")
        return JSONResponse(session.probe(str(body.get("prompt", "")), k))

    async def revert(request: Request) -> Response:
        return JSONResponse({"steps": session.revert()})

    async def download(request: Request) -> Response:
        what = request.path_params["what"]
        path = session.export(what)
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")

    routes = [Route("/", index), Route("/api/info", guarded(info)), Route("/api/check", guarded(check), methods=["POST"]),
              Route("/api/edit", guarded(edit), methods=["POST"]), Route("/api/cancel", guarded(cancel), methods=["POST"]),
              Route("/api/probe", guarded(probe), methods=["POST"]),
              Route("/api/revert", guarded(revert), methods=["POST"]),
              Route("/api/download/{what}", guarded(download)),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes)


def _fact(case) -> dict:
    r = case.request
    return {"subject": r.subject, "prompt": r.text, "target_new": r.target_new, "target_true": r.target_true}
