"""The Slack Bolt (async) adapter, through Bolt's own dispatch, with Slack faked at the wire.

Every update is a real Bolt request: `AsyncBoltRequest` with the raw body Slack sends
and its signature (`X-Slack-Signature`, checked by Bolt's own verification), fed to
`AsyncApp.async_dispatch`, or posted over HTTP to the aiohttp web app Bolt builds, or
pushed over a WebSocket to Bolt's Socket Mode handler. The Slack Web API is a small
aiohttp server on 127.0.0.1 (`FakeSlack`), where the app's `AsyncWebClient` is
pointed (`base_url`): it answers `auth.test` (Bolt's authorization),
`apps.connections.open` (Socket Mode), records `chat.postMessage` and can answer it
429 with a `Retry-After`, so a rate limit comes from slack_sdk's own HTTP layer. The
kill -9 test runs tests/_slack_child.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_bolt import App
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

import actors
from actors import Context, SQLiteJournal, UserActor
from supervisors import RedisCluster
from supervisors.adapters.bolt import (
    SlackEvent,
    by_channel,
    by_thread,
    by_user,
    command_of,
    inorder_for,
    msg_id_of,
    retry_after_of,
)
from tests.helpers import in_flight

SECRET = "test-signing-secret"
TEAM, BOT_USER, BOT_ID = "T1", "UBOT", "BBOT"
CHILD = Path(__file__).with_name("_slack_child.py")
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent
ROOT = Path(__file__).resolve().parent.parent


class FakeSlack:
    """The Slack Web API (and the Socket Mode WebSocket) on 127.0.0.1."""

    def __init__(self) -> None:
        self.url = ""
        self.posts: list[dict[str, Any]] = []
        self.limited = 0  # answer the next N chat.postMessage calls 429
        self.retry_after: str | None = "0.05"
        self.error: str | None = None  # answer chat.postMessage 200 {"ok": false, ...}
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connected = asyncio.Event()

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            args = await request.json()
        else:
            args = dict(await request.post())
        if method == "auth.test":
            return web.json_response(
                {"ok": True, "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}
            )
        if method == "apps.connections.open":
            return web.json_response({"ok": True, "url": self.url.replace("http", "ws") + "/link"})
        if method == "chat.postMessage":
            if self.limited:
                self.limited -= 1
                headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
                body = {"ok": False, "error": "ratelimited"}
                return web.json_response(body, status=429, headers=headers)
            if self.error is not None:
                return web.json_response({"ok": False, "error": self.error})
            self.posts.append(args)
            return web.json_response({"ok": True, "channel": args["channel"], "ts": "1.0"})
        return web.json_response({"ok": False, "error": "unknown_method"}, status=404)

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self.connected.set()
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.acks.put_nowait(json.loads(frame.data))
        return ws


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    server = web.Application()
    server.add_routes([web.post("/api/{method}", slack.api), web.get("/link", slack.link)])
    runner = web.AppRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    slack.url = f"http://{host}:{port}"
    try:
        yield slack
    finally:
        for ws in slack.sockets:
            await ws.close()
        await runner.cleanup()


def make_app(fake: FakeSlack) -> AsyncApp:
    client = AsyncWebClient(token="xoxb-test", base_url=f"{fake.url}/api/")
    return AsyncApp(client=client, signing_secret=SECRET, name="test")


# -- what Slack sends ------------------------------------------------------------------


def message(
    event_id: str,
    channel: str,
    text: str,
    *,
    user: str = "U1",
    thread_ts: str | None = None,
    kind: str = "message",
    **fields: Any,
) -> dict[str, Any]:
    """An Events API envelope, as Slack posts it."""
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": f"{1700000000 + len(event_id)}.{abs(hash(event_id)) % 10**6:06d}",
        "channel": channel,
        "channel_type": "im" if channel.startswith("D") else "channel",
        "event_ts": "1700000000.000100",
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event.update(fields)
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
    }


def slash(command: str, channel: str = "C1", *, text: str = "", trigger: str = "1.2.3") -> str:
    """A slash command's form body, as Slack posts it."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM,
            "channel_id": channel,
            "user_id": "U1",
            "command": command,
            "text": text,
            "response_url": "https://hooks.slack.invalid/commands/1",
            "trigger_id": trigger,
        }
    )


def headers_for(raw: str, *, form: bool = False, retry: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/x-www-form-urlencoded" if form else "application/json",
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": SignatureVerifier(SECRET).generate_signature(
            timestamp=stamp, body=raw
        ),
    }
    if retry is not None:
        headers |= {"x-slack-retry-num": str(retry), "x-slack-retry-reason": "http_timeout"}
    return headers


def signed(body: dict[str, Any] | str, *, retry: int | None = None) -> AsyncBoltRequest:
    """The Bolt request of `body` (a dict: JSON; a str: a slash command's form), signed."""
    raw = body if isinstance(body, str) else json.dumps(body)
    return AsyncBoltRequest(
        body=raw, headers=headers_for(raw, form=isinstance(body, str), retry=retry)
    )


async def idle(bridge: Any) -> None:
    await asyncio.wait_for(bridge.runtime.wait_idle(), 10)


# -- order, keys, replies ---------------------------------------------------------------


async def test_each_channel_in_order_many_channels_at_once(fake: FakeSlack) -> None:
    app = make_app(fake)
    seen: defaultdict[str | int, list[str]] = defaultdict(list)

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            assert type(event) is SlackEvent
            assert event.client is app.client
            seen[ctx.key].append(event.text)
            await asyncio.sleep(0)  # let the other channels interleave

    bridge = inorder_for(app, Bot)
    async with bridge:

        async def channel(c: int) -> None:
            for i in range(10):
                response = await app.async_dispatch(signed(message(f"Ev{c}x{i}", f"C{c}", f"m{i}")))
                assert (response.status, response.body) == (200, "")

        await asyncio.gather(*(channel(c) for c in range(20)))
        await idle(bridge)
        assert bridge.runtime.stats()["handled"] == 200
    assert seen == {f"slack:{TEAM}:C{c}": [f"m{i}" for i in range(10)] for c in range(20)}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (by_thread, [f"slack:{TEAM}:C1", f"slack:{TEAM}:C1:1700.000001", f"slack:{TEAM}:D1"]),
        (by_channel, [f"slack:{TEAM}:C1", f"slack:{TEAM}:C1", f"slack:{TEAM}:D1"]),
        (by_user, [f"slack:{TEAM}:user:U1", f"slack:{TEAM}:user:U2", f"slack:{TEAM}:user:U1"]),
    ],
)
async def test_keys_and_replies_in_the_thread(
    fake: FakeSlack, key: Callable[[SlackEvent], str | None], expected: list[str]
) -> None:
    app = make_app(fake)
    keys: list[str | int] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            keys.append(ctx.key)
            await event.say(f"re: {event.text}")

    bridge = inorder_for(app, Bot, key=key)
    async with bridge:
        for update in (
            message("Ev1", "C1", "top"),
            message("Ev2", "C1", "in a thread", user="U2", thread_ts="1700.000001"),
            message("Ev3", "D1", "direct"),
        ):
            await app.async_dispatch(signed(update))
            await idle(bridge)
    assert keys == expected
    assert fake.posts == [
        {"channel": "C1", "text": "re: top"},
        {"channel": "C1", "text": "re: in a thread", "thread_ts": "1700.000001"},
        {"channel": "D1", "text": "re: direct"},
    ]


async def test_the_event_reads_its_fields_and_travels_through_the_codec(fake: FakeSlack) -> None:
    app = make_app(fake)
    got: list[SlackEvent] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            got.append(event)

    bridge = inorder_for(app, Bot)
    async with bridge:
        await app.async_dispatch(signed(message("Ev9", "C7", "hello", thread_ts="1.5")))
        await idle(bridge)
    (event,) = got
    assert (event.text, event.channel, event.user, event.team) == ("hello", "C7", "U1", TEAM)
    assert (event.thread_ts, event.event_id, event.command) == ("1.5", "Ev9", None)
    assert event.event["type"] == "message"
    assert event.ts is not None
    assert "token" not in event.body  # the legacy verification token is not journaled
    assert msg_id_of(event) == "slack:Ev9"
    again = bridge.codec.loads(bridge.codec.dumps(event))
    assert type(again) is SlackEvent
    assert again == event
    assert again.client is app.client
    assert "client" not in repr(event)


async def test_a_cluster_run_carries_the_slack_event_through_redis(
    fake: FakeSlack, redis_url: str
) -> None:
    app = make_app(fake)
    got: list[SlackEvent] = []
    done = asyncio.Event()

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            got.append(event)
            await event.say(f"re: {event.text}")
            done.set()

    cluster = RedisCluster(
        redis_url, n_shards=4, lease_ttl=1.0, tick=0.05, member_ttl=0.5, join_grace=0.0
    )
    update = message("Ev1", "C1", "through redis")
    bridge = inorder_for(app, Bot, cluster=cluster, idle_timeout=None)
    async with bridge:
        response = await app.async_dispatch(signed(update))
        assert (response.status, response.body) == (200, "")
        await asyncio.wait_for(done.wait(), 10)
    (event,) = got
    assert type(event) is SlackEvent
    sent = {name: value for name, value in update.items() if name != "token"}
    assert event == SlackEvent(sent, app.client)
    assert event.body == sent
    assert event.client is app.client
    assert fake.posts == [{"channel": "C1", "text": "re: through redis"}]


def test_command_of_reads_slash_commands_and_chat_words() -> None:
    client = AsyncWebClient(token="xoxb-test")

    def event(text: str) -> SlackEvent:
        return SlackEvent(message("Ev1", "C1", text), client)

    names = ("stop", "cancel")
    assert command_of(SlackEvent({"command": "/Stop", "text": ""}, client), names) == "stop"
    assert command_of(event("stop"), names) == "stop"
    assert command_of(event("  Cancel "), names) == "cancel"
    assert command_of(event("/stop now"), names) == "stop"
    assert command_of(event(f"<@{BOT_USER}> stop"), names, BOT_USER) == "stop"
    assert command_of(event(f"<@{BOT_USER}|bot> stop"), names, BOT_USER) == "stop"
    for text in ("stop that", "please stop", "<@UOTHER> stop", "/", "/ stop", "hello", ""):
        assert command_of(event(text), names, BOT_USER) is None, text


# -- commands ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["slash", "text", "mention"])
async def test_stop_interrupts_the_turn_in_flight(fake: FakeSlack, how: str) -> None:
    app = make_app(fake)
    started = asyncio.Event()
    log: list[str] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            if event.text.endswith("write a poem"):
                started.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    log.append("poem cut short")
                    raise
            else:
                log.append(f"{event.text or event.command} at {ctx.priority}")
                await event.say("stopped")

    events = ("app_mention",) if how == "mention" else ("message",)
    bridge = inorder_for(app, Bot, events=events, priority=7)
    async with bridge:
        mention = f"<@{BOT_USER}> " if how == "mention" else ""
        kind = "app_mention" if how == "mention" else "message"
        poem = message("Ev1", "C1", f"{mention}write a poem", kind=kind)
        await app.async_dispatch(signed(poem))
        await asyncio.wait_for(started.wait(), 5)
        stop: dict[str, Any] | str = (
            slash("/stop") if how == "slash" else message("Ev2", "C1", f"{mention}stop", kind=kind)
        )
        response = await app.async_dispatch(signed(stop))
        assert (response.status, response.body) == (200, "")  # acked, nothing shown
        await idle(bridge)
        stats = bridge.runtime.stats()
    said = "/stop" if how == "slash" else f"{mention}stop"
    assert log == ["poem cut short", f"{said} at 7"]
    assert (stats["interrupted"], stats["handled"]) == (1, 1)
    assert fake.posts == [{"channel": "C1", "text": "stopped"}]


async def test_a_clearing_command_drops_what_waits_and_other_commands_stay_bolts(
    fake: FakeSlack,
) -> None:
    app = make_app(fake)
    started, release = asyncio.Event(), asyncio.Event()
    log: list[str] = []

    @app.command("/help")
    async def help_command(ack: Any) -> None:
        await ack("the app's own listener")

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            log.append(event.text or str(event.command))
            if event.text == "first":
                started.set()
                await release.wait()

    bridge = inorder_for(app, Bot, interrupts=("stop",), clears=("/reset",))
    async with bridge:
        await app.async_dispatch(signed(message("Ev1", "C1", "first")))
        await asyncio.wait_for(started.wait(), 5)
        await app.async_dispatch(signed(message("Ev2", "C1", "waiting")))
        await app.async_dispatch(signed(slash("/reset", trigger="9.9.9")))
        helped = await app.async_dispatch(signed(slash("/help")))
        release.set()
        await idle(bridge)
        stats = bridge.runtime.stats()
    assert log == ["first", "/reset"]  # /reset clears (and, not in interrupts, waits)
    assert (stats["handled"], stats["dropped"]) == (2, 1)
    assert (helped.status, helped.body) == (200, "the app's own listener")


# -- deduplication and what is left to Bolt ---------------------------------------------


async def test_a_retried_delivery_is_handled_once(fake: FakeSlack) -> None:
    app = make_app(fake)
    texts: list[str] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            texts.append(event.text)

    bridge = inorder_for(app, Bot)
    async with bridge:
        update = message("Ev42", "C1", "once")
        first = await app.async_dispatch(signed(update))
        await idle(bridge)
        for attempt in (1, 2):  # Slack's retries: the same event_id, X-Slack-Retry-Num
            again = await app.async_dispatch(signed(update, retry=attempt))
            assert again.status == 200  # acked, so Slack stops retrying
        await idle(bridge)
        stats = bridge.runtime.stats()
    assert first.status == 200
    assert texts == ["once"]
    assert (stats["handled"], stats["duplicates"]) == (1, 2)


async def test_what_is_not_a_persons_message_goes_on_to_the_apps_listeners(
    fake: FakeSlack,
) -> None:
    app = make_app(fake)
    routed: list[str] = []
    passed: list[str] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            routed.append(str(event.event_id))

    bridge = inorder_for(app, Bot, key=lambda e: None if e.channel == "C0" else by_thread(e))

    @app.middleware
    async def after_the_adapter(body: dict[str, Any], next: Any) -> None:
        passed.append(body.get("event_id") or body.get("command"))
        await next()

    @app.event("message")  # any message, subtypes included: Bolt acks it
    async def the_apps_messages() -> None:
        pass

    @app.event("app_mention")
    async def the_apps_mentions() -> None:
        pass

    @app.command("/other")
    async def the_apps_command(ack: Any) -> None:
        await ack()

    updates = [
        message("Ev1", "C1", "a person"),
        message("Ev2", "C1", "another bot", bot_id="B9", subtype="bot_message"),
        message("Ev3", "C1", "the app itself", user=BOT_USER, bot_id=BOT_ID),
        message("Ev4", "C1", "edited", subtype="message_changed"),
        message("Ev5", "C1", "", subtype="channel_join"),
        message("Ev6", "C1", f"<@{BOT_USER}> hi", kind="app_mention"),  # not in events
        message("Ev7", "C1", "a file", subtype="file_share"),
        message("Ev8", "C1", "also to #c", subtype="thread_broadcast", thread_ts="1.0"),
        message("Ev9", "C0", "a key of None"),
    ]
    async with bridge:
        for update in updates:
            response = await app.async_dispatch(signed(update))
            assert response.status == 200
        await app.async_dispatch(signed(slash("/other")))
        await idle(bridge)
    assert routed == ["Ev1", "Ev7", "Ev8"]
    # The app's own bot is dropped by Bolt's IgnoringSelfEvents before any middleware.
    assert passed == ["Ev2", "Ev4", "Ev5", "Ev6", "Ev9", "/other"]


async def test_a_mention_subscribed_twice_is_handled_once(fake: FakeSlack) -> None:
    """Subscribed to both, Slack sends a channel mention as a message and an app_mention."""
    app = make_app(fake)
    kinds: list[str] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            kinds.append(event.event["type"])

    bridge = inorder_for(app, Bot, events=("message", "app_mention"))
    async with bridge:
        text = f"<@{BOT_USER}> hello"
        await app.async_dispatch(signed(message("Ev1", "C1", text)))
        await app.async_dispatch(signed(message("Ev2", "C1", text, kind="app_mention")))
        await app.async_dispatch(signed(message("Ev3", "D1", text)))  # a DM: no app_mention
        await idle(bridge)
    assert kinds == ["app_mention", "message"]


# -- rate limits ------------------------------------------------------------------------


async def test_a_ratelimited_reply_runs_the_same_event_again_after_the_wait(
    fake: FakeSlack,
) -> None:
    app = make_app(fake)
    attempts: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            attempts.append(loop.time())
            await event.say(f"re: {event.text}")  # 429 the first time
            done.set()

    fake.limited, fake.retry_after = 1, "0.05"
    bridge = inorder_for(app, Bot)
    async with bridge:
        await app.async_dispatch(signed(message("Ev1", "C1", "hi")))
        await asyncio.wait_for(done.wait(), 5)
        await idle(bridge)
        stats = bridge.runtime.stats()
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.045
    assert fake.posts == [{"channel": "C1", "text": "re: hi"}]
    assert (stats["retry_afters"], stats["handled"], stats["failed"]) == (1, 1, 0)


async def test_retry_after_of_reads_slacks_answer(fake: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=f"{fake.url}/api/")

    async def error() -> SlackApiError:
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C1", text="x")
        return caught.value

    fake.limited, fake.retry_after = 1, "3"
    assert retry_after_of(await error()) == 3.0
    fake.limited, fake.retry_after = 1, None  # no header: a second, as slack_sdk waits
    assert retry_after_of(await error()) == 1.0
    fake.error = "channel_not_found"
    assert retry_after_of(await error()) is None
    assert retry_after_of(ValueError("ratelimited")) is None


# -- the lifecycle ----------------------------------------------------------------------


@pytest.mark.parametrize("built", ["before", "after"])
async def test_bolts_web_server_starts_and_stops_the_runtime(fake: FakeSlack, built: str) -> None:
    app = make_app(fake)
    hooks: list[str] = []
    handled = asyncio.Event()

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            handled.set()

    async def user_startup(_: web.Application) -> None:
        hooks.append("user startup")

    async def user_cleanup(_: web.Application) -> None:
        hooks.append(f"user cleanup, runtime {bridge.runtime.stats()['state']}")

    if built == "before":
        app.web_app().on_startup.append(user_startup)
    bridge = inorder_for(app, Bot)
    web_app = app.web_app()  # what app.start() serves
    if built == "after":
        web_app.on_startup.append(user_startup)
    web_app.on_cleanup.append(user_cleanup)
    assert bridge.runtime.stats()["state"] == "new"
    runner = web.AppRunner(web_app, handle_signals=False)
    await runner.setup()
    try:
        assert bridge.running
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        raw = json.dumps(message("Ev1", "C1", "over HTTP"))
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://{host}:{port}/slack/events", data=raw, headers=headers_for(raw)
            ) as response,
        ):
            assert response.status == 200
        await asyncio.wait_for(handled.wait(), 5)
    finally:
        await runner.cleanup()
    assert bridge.runtime.stats()["state"] == "stopped"
    assert hooks == ["user startup", "user cleanup, runtime stopped"]


@pytest.mark.parametrize("ending", ["close_async", "start_async cancelled"])
async def test_the_socket_mode_handler_starts_and_stops_the_runtime(
    fake: FakeSlack, ending: str
) -> None:
    app = make_app(fake)
    texts: list[str] = []

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            texts.append(event.text)

    handler = AsyncSocketModeHandler(app, app_token="xapp-test")
    bridge = inorder_for(handler, Bot)
    assert bridge.runtime.stats()["state"] == "new"
    task = None
    if ending == "close_async":
        await handler.connect_async()
    else:
        task = asyncio.create_task(handler.start_async())
    await asyncio.wait_for(fake.connected.wait(), 5)
    assert bridge.running
    envelope = {
        "envelope_id": "env-1",
        "type": "events_api",
        "payload": message("Ev1", "C1", "over the socket"),
        "accepts_response_payload": False,
        "retry_attempt": 0,
        "retry_reason": "",
    }
    await fake.sockets[0].send_json(envelope)
    ack = await asyncio.wait_for(fake.acks.get(), 5)
    assert ack == {"envelope_id": "env-1"}
    await idle(bridge)
    assert texts == ["over the socket"]
    if task is None:
        await handler.close_async()
    else:
        task.cancel()  # Ctrl-C under asyncio.run
        with pytest.raises(asyncio.CancelledError):
            await task
    assert bridge.runtime.stats()["state"] == "stopped"
    assert handler.client.closed


async def test_async_with_the_bridge_for_any_other_server(fake: FakeSlack) -> None:
    app = make_app(fake)

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            pass

    bridge = inorder_for(app, Bot)
    response = await app.async_dispatch(signed(message("Ev1", "C1", "too early")))
    assert response.status == 500  # RuntimeStopped reached Bolt: Slack will retry it
    async with bridge:
        assert bridge.running
        assert (await app.async_dispatch(signed(message("Ev1", "C1", "now")))).status == 200
        await idle(bridge)
        assert bridge.runtime.stats()["handled"] == 1
    assert bridge.runtime.stats()["state"] == "stopped"


# -- bad arguments, the missing extra -----------------------------------------------------


def test_bad_arguments_raise_at_the_call_site() -> None:
    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            pass

    sync_app = App(
        client=WebClient(token="xoxb-test"),
        signing_secret=SECRET,
        token_verification_enabled=False,
        name="sync",
    )
    app = AsyncApp(client=AsyncWebClient(token="xoxb-test"), signing_secret=SECRET, name="t")
    with pytest.raises(TypeError, match="AsyncApp"):
        inorder_for(sync_app, Bot)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncApp"):
        inorder_for("app", Bot)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        inorder_for(app, Bot, key="channel")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="events"):
        inorder_for(app, Bot, events="message")
    with pytest.raises(ValueError, match="events"):
        inorder_for(app, Bot, events=("reaction_added",))
    with pytest.raises(ValueError, match="events"):
        inorder_for(app, Bot, events=())
    with pytest.raises(TypeError, match="interrupts"):
        inorder_for(app, Bot, interrupts="stop")
    with pytest.raises(ValueError, match="clears"):
        inorder_for(app, Bot, clears=("stop now",))
    with pytest.raises(ValueError, match="priority"):
        inorder_for(app, Bot, priority=0)
    with pytest.raises(ValueError, match="send_timeout"):
        inorder_for(app, Bot, send_timeout=0)
    with pytest.raises(TypeError, match="no_such_option"):
        inorder_for(app, Bot, no_such_option=1)
    assert len(app._async_middleware_list) == len(
        AsyncApp(
            client=AsyncWebClient(token="x"), signing_secret=SECRET, name="t"
        )._async_middleware_list
    )  # nothing was wired by a call that raised


@pytest.mark.parametrize("missing", ["slack_bolt", "aiohttp"])
def test_importing_without_the_extra_names_it(missing: str) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(PACKAGE_DIR)!r}); sys.modules[{missing!r}] = None\n"
        "try:\n    import supervisors.adapters.bolt\n"
        "except ImportError as error:\n    print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'inorder[slack]'" in out.stdout


# -- the example bot -------------------------------------------------------------------


def test_the_example_without_a_token_says_what_it_would_do_and_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    done = subprocess.run(
        [sys.executable, "-m", "examples.slack_bot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "is not set, so nothing is sent" in done.stdout
    assert done.stderr == ""


async def test_the_examples_agent_answers_in_order_and_stops_on_stop(fake: FakeSlack) -> None:
    from examples.slack_bot import Agent

    app = make_app(fake)
    bridge = inorder_for(app, Agent, clears=("stop",), idle_timeout=None)
    async with bridge:
        for i, text in enumerate(["first", "second", "stop"]):
            await app.async_dispatch(signed(message(f"Ev{i}", "C1", text)))
            if text == "first":
                await in_flight(bridge.runtime, 1)  # its "LLM call" has begun
        await idle(bridge)
        stats = bridge.runtime.stats()
    assert fake.posts == [{"channel": "C1", "text": "Stopped."}]
    assert (stats["interrupted"], stats["dropped"], stats["handled"]) == (1, 1, 1)


# -- kill -9 ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_killed_run_replays_its_events_as_slack_events_bound_to_the_app(
    fake: FakeSlack, tmp_path: Path
) -> None:
    journal, facts = tmp_path / "journal.db", tmp_path / "facts"

    async def child(mode: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-P", str(CHILD), str(PACKAGE_DIR), fake.url, str(journal),
            str(facts), mode,
            stdout=subprocess.PIPE if mode == "hold" else subprocess.DEVNULL,
        )  # fmt: skip

    holder = await child("hold")
    try:
        assert holder.stdout is not None
        lines = {(await asyncio.wait_for(holder.stdout.readline(), 60)).strip() for _ in "12"}
        assert lines == {b"holding", b"sent"}  # "sent": Bolt answered all three (journaled)
        os.kill(holder.pid, signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), 30)
    finally:
        if holder.returncode is None:
            os.kill(holder.pid, signal.SIGKILL)
            await holder.wait()
    assert holder.returncode == -signal.SIGKILL
    store = SQLiteJournal(journal)
    try:
        assert store.pending_count() == 3
    finally:
        store.close()
    assert fake.posts == []
    after = await child("after")
    try:
        assert await asyncio.wait_for(after.wait(), 60) == 0
    finally:
        if after.returncode is None:
            os.kill(after.pid, signal.SIGKILL)
            await after.wait()
    assert facts.read_text().splitlines() == [
        "T hold Ev1 first SlackEvent app.client 0",
        # replayed: the framework's object, bound to the app's client, in order
        "T after Ev1 first SlackEvent app.client 1",
        "T after Ev2 second SlackEvent app.client 1",
        "T after Ev3 third SlackEvent app.client 1",
        # Slack's retry of Ev2 after the restart was a duplicate; then the new one
        "T after Ev4 fourth SlackEvent app.client 0",
    ]
    assert fake.posts == [
        {"channel": "C1", "text": "re: first"},
        {"channel": "C1", "text": "re: second"},
        {"channel": "C1", "text": "re: third", "thread_ts": "1700000000.000100"},
        {"channel": "C1", "text": "re: fourth"},
    ]
    store = SQLiteJournal(journal)
    try:
        assert store.pending_count() == 0
    finally:
        store.close()
