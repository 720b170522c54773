"""The Slack Bolt (async) adapter's implementation (the surface is `bolt.py`).

`inorder_for(app, Bot)` adds one global middleware to the `AsyncApp` (`app.use`),
after Bolt's own (request verification, authorization, ignoring the app's own
events), so it sees only requests Bolt has verified. For a user message, or a
slash command named in `interrupts`/`clears`, it builds a `SlackEvent`, awaits
`Bridge.route`, and answers Slack 200 there, without calling `next()`: the ack
goes out once the runtime accepted the update (journaled, with a store), well
within Slack's 3 s, whatever `process_before_response` says, and no listener of
the app handles it a second time. Anything else (other events, other commands,
interactivity, a key of None) goes on to the app's own listeners untouched.

Why a middleware and not `app.event("message")`: Bolt acks an event listener
before running it (unless `process_before_response=True`), so a crash between
that ack and the journal would lose an update Slack believes delivered.

Lifecycle: every aiohttp web app Bolt builds for this app (`app.web_app()`,
`app.start()`, each `app.server(...)`) gets the runtime's start in `on_startup`
(after the hooks already there) and its stop first in `on_cleanup` (the server
has stopped taking requests; the handlers' resources are still open). Given an
`AsyncSocketModeHandler` instead of the app, its `connect_async` starts the
runtime before connecting, `close_async` stops it after closing, and
`start_async` closes (and so stops) when it ends, Ctrl-C included. Anything else
(a FastAPI or Starlette adapter, tests): `async with bridge:`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from slack_bolt.adapter.socket_mode.async_base_handler import AsyncBaseSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.app.async_server import AsyncSlackAppServer
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError

from supervisors.adapters._bolt_event import TAG, SlackEvent, by_thread, command_of, msg_id_of
from supervisors.adapters._bridge import DEFAULT_PRIORITY, Bridge

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from aiohttp import web
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    from actors._user_actor import UserActor

__all__ = ["EVENTS", "inorder_for", "retry_after_of"]

#: The event types `inorder_for(events=...)` can route.
EVENTS: Final = frozenset({"app_mention", "message"})

#: Message subtypes a person's message has: none, "Also send to #channel", a file.
_USER_SUBTYPES: Final = frozenset({None, "thread_broadcast", "file_share"})

#: When Slack sends no Retry-After with its 429 (it always should), as slack_sdk's own
#: retry handler does: a second.
DEFAULT_RETRY_AFTER: Final = 1.0


def retry_after_of(error: BaseException) -> float | None:
    """The seconds Slack asked to wait, if `error` is slack_sdk's `SlackApiError` for a 429.

    A `ratelimited` answer (HTTP 429, or the error name in the body) gives its
    `Retry-After` header's seconds (1.0 if it has none); any other error gives None.
    A `RetryHandler` installed on the client retries before anything reaches here.
    """
    if not isinstance(error, SlackApiError):
        return None
    response = error.response
    data = getattr(response, "data", None)
    limited = getattr(response, "status_code", None) == 429 or (
        isinstance(data, dict) and data.get("error") == "ratelimited"
    )
    if not limited:
        return None
    headers: Any = getattr(response, "headers", None)
    for name, value in headers.items() if hasattr(headers, "items") else ():
        if isinstance(name, str) and name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                seconds = float(raw)
            except (TypeError, ValueError):
                break
            return max(seconds, 0.0) if math.isfinite(seconds) else DEFAULT_RETRY_AFTER
    return DEFAULT_RETRY_AFTER


def inorder_for(
    app: AsyncApp | AsyncBaseSocketModeHandler,
    actor_factory: Callable[[str | int], UserActor],
    *,
    key: Callable[[SlackEvent], str | None] = by_thread,
    interrupts: Collection[str] = ("stop", "cancel"),
    clears: Collection[str] = (),
    priority: int = DEFAULT_PRIORITY,
    events: Collection[str] = ("message",),
    send_timeout: float | None = 30.0,
    drain: bool = True,
    stop_timeout: float = 10.0,
    **runtime_options: Any,
) -> Bridge:
    """Wire a runtime of `actor_factory` into a Bolt `AsyncApp`; returns the `Bridge`.

    `app` is the `AsyncApp`, or the `AsyncSocketModeHandler` that runs it. Every
    person's message of the `events` types goes to `key(event)`'s actor as a
    `SlackEvent`, with `msg_id="slack:{event_id}"` so that Slack's retries are
    handled once: "message" by default; add "app_mention" only if the app subscribes
    to it (then a channel message that mentions the bot, which Slack sends as both,
    is taken once, as the mention). A
    slash command or a message naming a command of `interrupts` (`/stop`, "stop")
    is sent at `priority` with `interrupt=True`, one of `clears` with `clear=True`.
    The other keywords go to `Runtime` (`store=`, `cluster=`, `idle_timeout=`, ...).
    The runtime's codec learns `SlackEvent` (the body; rebuilt with `app.client`).

    Raises `TypeError` or `ValueError` for a bad argument, here.
    """
    handler = app if isinstance(app, AsyncBaseSocketModeHandler) else None
    target: object = app if handler is None else handler.app
    if not isinstance(target, AsyncApp):
        msg = (
            "inorder_for() takes a slack_bolt AsyncApp or an AsyncSocketModeHandler of one "
            f"(the sync App is not supported), got {target!r}"
        )
        raise TypeError(msg)
    app = target
    if not callable(key):
        msg = f"key must be a callable of a SlackEvent, got {key!r}"
        raise TypeError(msg)
    kinds = _check_events(events)
    bridge = Bridge(
        actor_factory,
        platform="slack",
        translate=retry_after_of,
        interrupts=interrupts,
        clears=clears,
        priority=priority,
        send_timeout=send_timeout,
        drain=drain,
        stop_timeout=stop_timeout,
        runtime_options=runtime_options,
    )
    client = app.client

    def decode(body: Any) -> SlackEvent:
        return SlackEvent(body, client)

    bridge.register(SlackEvent, tag=TAG, encode=_encode, decode=decode)
    app.use(_Route(bridge, client, key, kinds))
    _hook_web_apps(app, bridge)
    if handler is not None:
        _hook_socket_mode(handler, bridge)
    return bridge


def _encode(event: SlackEvent) -> dict[str, Any]:
    return event.body


def _check_events(events: Collection[str]) -> frozenset[str]:
    if isinstance(events, str) or not all(isinstance(e, str) for e in events):
        msg = f"events takes a collection of event types, not {events!r}"
        raise TypeError(msg)
    kinds = frozenset(events)
    if not kinds or not kinds <= EVENTS:
        msg = f"events must name one or both of {sorted(EVENTS)}, got {sorted(kinds)}"
        raise ValueError(msg)
    return kinds


class _Route(AsyncMiddleware):
    """The global middleware: route what is the actors', pass the rest to Bolt."""

    def __init__(
        self,
        bridge: Bridge,
        client: AsyncWebClient,
        key: Callable[[SlackEvent], str | None],
        kinds: frozenset[str],
    ) -> None:
        self._bridge = bridge
        self._client = client
        self._key = key
        self._kinds = kinds
        self._names = frozenset(bridge.commands)

    @property
    def name(self) -> str:
        return "inorder"

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        bot_user_id = req.context.bot_user_id
        event = self._event(req.body, bot_user_id)
        if event is None:
            return await next()
        command = command_of(event, self._names, bot_user_id)
        if not await self._bridge.route(event, self._key(event), msg_id_of(event), command):
            return await next()
        # The ack, now that the runtime has the update (journaled, with a store).
        return BoltResponse(status=200, body="")

    def _event(self, body: dict[str, Any], bot_user_id: str | None) -> SlackEvent | None:
        """The `SlackEvent` of a request the actors take, or None for Bolt's listeners."""
        client = self._client
        if "command" in body:  # a slash command: only the ones named as commands
            name = body.get("command")
            if not isinstance(name, str) or name.removeprefix("/").lower() not in self._names:
                return None
            return SlackEvent(_without_token(body), client)
        inner = body.get("event")
        if body.get("type") != "event_callback" or not isinstance(inner, dict):
            return None
        kind = inner.get("type")
        if kind not in self._kinds or inner.get("bot_id") or not inner.get("user"):
            return None  # another event, or a bot's message (this app's own included)
        if kind == "message":
            if inner.get("subtype") not in _USER_SUBTYPES or inner.get("hidden"):
                return None  # an edit, a deletion, a join, a bot_message...
            if (
                "app_mention" in self._kinds
                and bot_user_id
                and inner.get("channel_type") in ("channel", "group")
                and f"<@{bot_user_id}" in str(inner.get("text", ""))
            ):
                return None  # Slack sends this message as an app_mention too: once is enough
        return SlackEvent(_without_token(body), client)


def _without_token(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the legacy verification token: a secret has no place in a journal."""
    return {name: value for name, value in body.items() if name != "token"}


# -- the lifecycle ---------------------------------------------------------------------


def _hook_web_apps(app: AsyncApp, bridge: Bridge) -> None:
    """Start and stop with each aiohttp web app Bolt builds for `app` (one per port/path)."""
    hooked: list[web.Application] = []

    async def started(_: web.Application) -> None:
        await bridge.start()

    async def stopped(_: web.Application) -> None:
        await bridge.stop()

    def hook(server: AsyncSlackAppServer) -> None:
        web_app = server.web_app
        if any(done is web_app for done in hooked):
            return
        if web_app.frozen:
            msg = "inorder_for() must be called before the app's web server starts"
            raise RuntimeError(msg)
        hooked.append(web_app)
        web_app.on_startup.append(started)  # after the user's: what handlers use is open
        web_app.on_cleanup.insert(0, stopped)  # before the user's: the drain still has it

    make = app.server

    def server(
        port: int = 3000, path: str = "/slack/events", host: str | None = None
    ) -> AsyncSlackAppServer:
        made = make(port=port, path=path, host=host)
        hook(made)
        return made

    existing = getattr(app, "_server", None)  # one Bolt built before this call
    if isinstance(existing, AsyncSlackAppServer):
        hook(existing)
    app.server = server  # type: ignore[method-assign]


def _hook_socket_mode(handler: AsyncBaseSocketModeHandler, bridge: Bridge) -> None:
    """Start before the handler connects; stop once it closed, or its `start_async` ended."""
    methods: Any = handler  # Bolt leaves these methods unannotated
    connect, start, close = methods.connect_async, methods.start_async, methods.close_async

    async def connect_async() -> None:
        await bridge.start()  # first: the first event may come right after the hello
        await connect()

    async def close_async() -> None:
        try:
            await close()
        finally:
            await bridge.stop()

    async def start_async() -> None:
        try:
            await start()  # connects (the wrapper above), then sleeps until cancelled
        finally:
            await methods.close_async()

    methods.connect_async = connect_async
    methods.close_async = close_async
    methods.start_async = start_async
