"""The monitor's HTTP service (starlette): the page, the JSON API, the push channel, publishing.

Routes:

- ``GET /``: the page; ``GET /static/...``: its script, style and the plotting library.
- ``GET /api/layout``: tabs and canvases of the config, packages' ``stale_after``.
- ``GET /api/packages``: ``[{"name", "serial"}]``.
- ``GET /api/packages/NAME``: ``{"name", "serial", "updated", "objects": {name: uhi JSON}}``.
- ``POST /api/packages``: publish a whole package (``Authorization: Bearer TOKEN``);
  401 without the right token, 403 when the monitor was started without one.
- ``GET /api/events``: server-sent events; ``packages`` events carry only the
  packages whose serial grew (``{"now", "packages": [{"name", "serial"}]}``),
  the first one every package.
- ``GET /api/status``: the monitor's DDS sessions.

Changed packages are found every ``update_interval`` seconds of the config and
pushed at once to every open event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .feed import Feed
from .packages import PackageError, PackageStore

__all__ = ["MAX_BODY", "create_app"]

log = logging.getLogger("ddsmonitor")

STATIC = Path(__file__).resolve().parent / "static"
#: the largest package body taken by POST
MAX_BODY = 8 * 1024 * 1024
#: seconds between keep-alive events on an idle event stream (the page also repaints freshness then)
TICK_SECONDS = 2.0
#: events queued for one slow viewer before it is sent the full list instead
QUEUE_LIMIT = 64


class _Hub:
    """The open event streams; each gets its own queue of changed-package lists."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue] = set()

    def broadcast(self, changed: list[dict], everything: list[dict]) -> None:
        for queue in self.queues:
            if queue.qsize() >= QUEUE_LIMIT:  # a viewer that stopped reading catches up with one full list
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(everything)
            else:
                queue.put_nowait(changed)


def create_app(store: PackageStore, feeds: list[Feed] = (), *, token: str | None = None,  # type: ignore[assignment]
               stop_feeds_on_exit: bool = True) -> Starlette:
    """Build the web app of one monitor.

    Args:
        store (PackageStore): the packages (config and published ones).
        feeds (list[Feed]): DDS sessions, started with the app (unless already started) and stopped
            with it; default none.
        token (str | None): the secret POST needs; None refuses every POST; default None.
        stop_feeds_on_exit (bool): stop and join the feeds when the app shuts down; default True.

    Returns:
        starlette.applications.Starlette: an ASGI app (run it with uvicorn).
    """
    config = store.config
    hub = _Hub()
    started = time.time()
    stopping = asyncio.Event()

    async def publisher() -> None:
        while True:
            changed = store.publish_changes()
            if changed:
                hub.broadcast(changed, store.listing())
            await asyncio.sleep(config.update_interval)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        for feed in feeds:
            if feed.ident is None:  # not started by the caller already
                feed.start()
        task = asyncio.create_task(publisher())
        try:
            yield
        finally:
            stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if stop_feeds_on_exit:
                for feed in feeds:
                    feed.stop()
                for feed in feeds:
                    await asyncio.to_thread(feed.join, 10)

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def layout(_request: Request) -> Response:
        return JSONResponse(config.layout())

    async def listing(_request: Request) -> Response:
        return JSONResponse(store.listing())

    async def package(request: Request) -> Response:
        name = request.path_params["name"]
        body = store.body(name)
        if body is None:
            from dispatcher.suggest import did_you_mean

            names = [p["name"] for p in store.listing()]
            return JSONResponse({"error": f"no package {name!r}; " + did_you_mean(name, names, kind="packages")},
                                status_code=404)
        return Response(body, media_type="application/json")

    async def publish(request: Request) -> Response:
        if token is None:
            return JSONResponse({"error": "this monitor takes no published packages: start ddsmonitor with "
                                          "--token-file FILE"}, status_code=403)
        given = request.headers.get("authorization", "")
        scheme, _, secret = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(secret.strip().encode(), token.encode()):
            return JSONResponse({"error": "publishing needs the header 'Authorization: Bearer TOKEN' with the "
                                          "monitor's token"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="ddsmonitor"'})
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": f"package larger than {MAX_BODY} bytes"}, status_code=413)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        try:
            stored = store.publish(payload)
        except PackageError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        log.info("package %r published by %s (serial %d)", stored["name"],
                 request.client.host if request.client else "?", stored["serial"])
        hub.broadcast([stored], store.listing())
        return JSONResponse(stored)

    async def events(request: Request) -> Response:
        queue: asyncio.Queue = asyncio.Queue()
        queue.put_nowait(store.listing())
        hub.queues.add(queue)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while not stopping.is_set():
                    try:
                        changed = await asyncio.wait_for(queue.get(), TICK_SECONDS)
                    except asyncio.TimeoutError:
                        yield f"event: tick\ndata: {json.dumps({'now': time.time()})}\n\n"
                        continue
                    yield f"event: packages\ndata: {json.dumps({'now': time.time(), 'packages': changed})}\n\n"
            finally:
                hub.queues.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def status(_request: Request) -> Response:
        return JSONResponse({"monitor": {"config": config.path, "title": config.title, "started": started,
                                         "now": time.time(), "viewers": len(hub.queues)},
                             "sessions": [feed.status() for feed in feeds]})

    routes = [
        Route("/", page),
        Route("/api/layout", layout),
        Route("/api/packages", listing, methods=["GET"]),
        Route("/api/packages", publish, methods=["POST"]),
        Route("/api/packages/{name}", package),
        Route("/api/events", events),
        Route("/api/status", status),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(GZipMiddleware, minimum_size=1024)])
