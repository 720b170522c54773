"""`AdminServer`: a small HTTP endpoint with a runtime's figures, dead letters and dashboard.

`Runtime(..., observe=[AdminServer(port=8321)])` serves it on the runtime's
loop from `start()` (a port in use fails the start, with nothing else started)
until the runtime has stopped. `python -m supervisors dashboard --redis URL`
serves the same over a cluster read straight from Redis (any `Source`).

The routes (JSON unless said):

* `GET /` the dashboard (one HTML page with its script; no build step).
* `GET /api/status` the figures (`Runtime.stats()`'s keys) and `now`.
* `GET /api/dead-letters` `{"dead_letters": [...]}` (`_source.py` says what each holds).
* `POST /api/dead-letters/{id}/redeliver` `{"redelivered": id}`, 404 for an unknown id.
* `POST /api/dead-letters/purge`, body `{"ids": [...]}` or `{}` for all: `{"purged": n}`.
* `GET /metrics` the Prometheus exposition of the runtime (with `prometheus_client`).

Safety: it binds 127.0.0.1 by default and refuses any other address without a
`token`. With a token, every route but the page itself needs
`Authorization: Bearer <token>` (the page reads it from its `#token=` fragment,
which browsers never send). A `POST` must carry `Content-Type: application/json`
and, if the browser sends an `Origin`, come from this server's own: a page on
another site cannot make a visitor's browser redeliver or purge.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from supervisors.observe._optional import need
from supervisors.observe._runtime_source import RuntimeSource
from supervisors.observe._source import Source

if TYPE_CHECKING:
    from aiohttp import web

    from supervisors._runtime import Runtime

__all__ = ["AdminServer"]


class AdminServer:
    """The admin endpoint: an observer of a runtime, or a server over any `Source`.

    Args:
        host: the address to bind (default 127.0.0.1); a non-loopback one needs `token`.
        port: the port (0: any free one; `port` has it once open).
        token: a secret every API request must carry as `Authorization: Bearer ...`.
        source: what to serve when not used as a runtime's observer (`start()` it).
        refresh: seconds between the dashboard's reads of `/api/status`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8321,
        token: str | None = None,
        source: Source | None = None,
        refresh: float = 1.0,
    ) -> None:
        need("aiohttp", "admin")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            msg = f"port must be an int from 0 to 65535, got {port!r}"
            raise ValueError(msg)
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            msg = "token must be a str of at least 16 characters (secrets.token_urlsafe())"
            raise ValueError(msg)
        if not isinstance(host, str) or not host:
            msg = f"host must be an address, got {host!r}"
            raise ValueError(msg)
        if token is None and not _loopback(host):
            msg = (
                f"refusing to serve the admin endpoint on {host!r} without a token: "
                "anyone who reaches it could purge dead letters (pass token=...)"
            )
            raise ValueError(msg)
        if source is not None and not isinstance(source, Source):
            msg = f"source must be a Source (status, dead_letters, redeliver, purge): {source!r}"
            raise TypeError(msg)
        if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not refresh > 0:
            msg = f"refresh must be a number of seconds > 0, got {refresh!r}"
            raise ValueError(msg)
        self.host = host
        self.port = port
        self.token = token
        self.source = source
        self.refresh = float(refresh)
        self._runner: web.AppRunner | None = None
        self._metrics: Any = None  # a CollectorRegistry of the runtime, with prometheus_client

    def __repr__(self) -> str:
        return f"<AdminServer {self.url}>"

    @property
    def url(self) -> str:
        """The server's base URL (its real port once open)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- as an observer ------------------------------------------------------------

    async def open(self, runtime: Runtime) -> None:
        self.source = RuntimeSource(runtime)
        self._metrics = _registry_of(runtime)
        await self.start()

    def attached(self, runtime: Runtime) -> None:
        core = runtime._core
        if core is not None and self._metrics is not None:  # the chart's histograms
            core.outcomes.latency.count_buckets()

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- standalone ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve `source` (raises OSError for a port in use)."""
        from aiohttp import web

        if self.source is None:
            msg = "AdminServer.start() needs a source (or use it as a runtime's observer)"
            raise RuntimeError(msg)
        if self._runner is not None:
            msg = "this AdminServer is already serving"
            raise RuntimeError(msg)
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/api/status", self._status),
                web.get("/api/dead-letters", self._letters),
                web.post("/api/dead-letters/purge", self._purge),
                web.post("/api/dead-letters/{id}/redeliver", self._redeliver),
                web.get("/metrics", self._exposition),
            ]
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the routes --------------------------------------------------------------------

    @property
    def _guard(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != "/" and self.token is not None:
                given = request.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                    return _error(401, "a valid 'Authorization: Bearer <token>' is required")
            if request.method == "POST":
                if request.content_type != "application/json":
                    return _error(415, "POST bodies are JSON (Content-Type: application/json)")
                origin = request.headers.get("Origin")
                if origin is not None and origin != f"{request.scheme}://{request.host}":
                    return _error(403, f"cross-origin request refused ({origin})")
            try:
                response: web.StreamResponse = await handler(request)
            except web.HTTPException:
                raise
            except Exception as exc:  # the source failed: say so, keep serving
                return _error(500, f"{type(exc).__name__}: {exc}")
            return response

        return guard

    async def _page(self, request: web.Request) -> web.Response:
        from aiohttp import web

        page = resources.files("supervisors.observe").joinpath("dashboard.html").read_text()
        page = page.replace("__REFRESH_MS__", str(int(self.refresh * 1000)))
        return web.Response(
            text=page,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
        )

    async def _status(self, request: web.Request) -> web.Response:
        return _json(await self._source.status())

    async def _letters(self, request: web.Request) -> web.Response:
        return _json({"dead_letters": await self._source.dead_letters()})

    async def _redeliver(self, request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        if not await self._source.redeliver(wanted):
            return _error(404, f"no dead letter {wanted!r} (already redelivered or purged?)")
        return _json({"redelivered": wanted})

    async def _purge(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _error(400, "the body is not JSON")
        ids = body.get("ids") if isinstance(body, dict) else None
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            return _error(400, "ids must be a list of dead-letter ids (strings)")
        return _json({"purged": await self._source.purge(ids)})

    async def _exposition(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self._metrics is None:
            return _error(404, "no metrics here (a runtime's endpoint, with inorder[metrics])")
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @property
    def _source(self) -> Source:
        assert self.source is not None  # start() checked
        return self.source


def _registry_of(runtime: Runtime) -> Any:
    """A registry with the runtime's collector, when prometheus_client is installed."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        return None
    from supervisors.observe._metrics import RuntimeCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200) -> web.Response:
    from aiohttp import web

    return web.Response(
        text=json.dumps(data, default=str),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)
