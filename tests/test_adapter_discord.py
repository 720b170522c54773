"""The discord.py 2 adapter, proved with discord.py's own objects and dispatch, offline.

Every update is a gateway payload fed as JSON text through discord.py's own
`DiscordWebSocket.received_message` (`Gateway`): its MESSAGE_CREATE parser builds
the `discord.Message` on the client's state and the client dispatches it, as with
Discord. The REST API is a `FakeDiscord` on 127.0.0.1 that discord.py's own HTTP
stack is pointed at (`Route.BASE`): `client.login()` runs for real (and with it
`setup_hook`), replies go through `HTTPClient.request`, and a 429 goes through
discord.py's own retry and rate-limit handling before it reaches a handler.
The SIGKILL test runs tests/_discord_child.py in real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog

with warnings.catch_warnings():
    # discord.py's voice player imports audioop, deprecated in Python 3.11 and 3.12
    # (discord.py takes audioop-lts on 3.13). The framework's own, and harmless here:
    # nothing plays audio.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord.ext import commands

import actors
from actors import Context, SQLiteJournal, UserActor
from supervisors import RedisCluster
from supervisors.adapters._discordpy import DEFAULT_RETRY_AFTER
from supervisors.adapters.discordpy import (
    TAG,
    Bridge,
    by_channel,
    by_user,
    command_of,
    inorder_for,
    msg_id_of,
    retry_after_of,
)
from tests._discord_child import (
    BOT_ID,
    GUILD_ID,
    USER_ID,
    FakeDiscord,
    Gateway,
    guild,
    message,
    user,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("_discord_child.py")
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent
WAIT = 5.0


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api)
    try:
        yield server
    finally:
        await server.close()


def new_client(kind: str = "client", **options: Any) -> discord.Client:
    intents = discord.Intents.default()
    intents.message_content = True
    if kind == "bot":
        return commands.Bot(command_prefix="?", intents=intents, **options)
    return discord.Client(intents=intents, **options)


@contextlib.asynccontextmanager
async def logged_in(client: discord.Client) -> AsyncIterator[Gateway]:
    """`client.login()` against the fake (its setup_hook runs), then `client.close()`."""
    await client.login("token")
    try:
        yield Gateway(client)
    finally:
        await client.close()


class Turns:
    """What handlers saw, per key, and a wait for a number of turns."""

    def __init__(self) -> None:
        self.by_key: dict[str | int, list[str]] = defaultdict(list)
        self.messages: list[discord.Message] = []
        self._wanted = 0
        self._reached = asyncio.Event()

    def add(self, ctx: Context, message: discord.Message) -> None:
        assert type(message) is discord.Message
        self.by_key[ctx.key].append(message.content)
        self.messages.append(message)
        if len(self.messages) >= self._wanted:
            self._reached.set()

    async def wait(self, count: int) -> None:
        self._wanted = count
        if len(self.messages) < count:
            self._reached.clear()
            await asyncio.wait_for(self._reached.wait(), WAIT)


def recorder(turns: Turns) -> type[UserActor]:
    class Recorder(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            turns.add(ctx, message)

    return Recorder


# -- each update reaches its channel's actor -------------------------------------------


@pytest.mark.parametrize("kind", ["client", "bot"])
async def test_each_channel_gets_its_messages_in_order_many_channels_at_once(
    fake: FakeDiscord, kind: str
) -> None:
    turns = Turns()
    running = peak = 0

    class Echo(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)  # a turn that yields, as a reply over HTTP would
            running -= 1
            turns.add(ctx, message)

    client = new_client(kind)
    inorder_for(client, Echo)
    async with logged_in(client) as gateway:
        for i in range(10):  # interleaved, as a busy gateway delivers them
            for channel in range(20):
                await gateway.message(message(10_000 + i * 20 + channel, 500 + channel, f"{i}"))
        await turns.wait(200)
    assert set(turns.by_key) == {f"discord:{500 + channel}" for channel in range(20)}
    for contents in turns.by_key.values():
        assert contents == [f"{i}" for i in range(10)]
    assert peak > 1  # channels ran side by side


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("kind", ["client", "bot"])
async def test_the_users_own_on_message_still_gets_every_message(
    fake: FakeDiscord, kind: str, when: str
) -> None:
    turns, theirs = Turns(), []
    client = new_client(kind)

    async def on_message(message: discord.Message) -> None:
        theirs.append(message.content)

    if when == "before":
        client.event(on_message)
    inorder_for(client, recorder(turns))
    if when == "after":  # a plain client's is picked up in setup_hook, before any event
        client.event(on_message)
    async with logged_in(client) as gateway:
        await gateway.message(message(1, 111, "hello"))
        await gateway.message(message(2, 111, "there"))
        await turns.wait(2)  # the user's on_message ran once the bridge's had routed
    assert turns.by_key["discord:111"] == ["hello", "there"]
    assert theirs == ["hello", "there"]


async def test_by_user_and_a_key_of_none(fake: FakeDiscord) -> None:
    turns = Turns()

    def per_user_not_in_999(message: discord.Message) -> str | None:
        return None if message.channel.id == 999 else by_user(message)

    client = new_client()
    inorder_for(client, recorder(turns), key=per_user_not_in_999)
    async with logged_in(client) as gateway:
        await gateway.message(message(1, 111, "a"))
        await gateway.message(message(2, 999, "not routed"))
        await gateway.message(message(3, 222, "b", author=user(777, "bob")))
        await gateway.message(message(4, 333, "c"))  # the same user, elsewhere
        await turns.wait(3)
    assert dict(turns.by_key) == {f"discord:user:{USER_ID}": ["a", "c"], "discord:user:777": ["b"]}
    assert by_channel(turns.messages[0]) == "discord:111"


async def test_the_bots_own_other_bots_and_system_messages_are_not_routed(
    fake: FakeDiscord,
) -> None:
    for ignore_bots, expected in ((True, ["human", "end"]), (False, ["human", "bot", "end"])):
        turns = Turns()
        client = new_client()
        inorder_for(client, recorder(turns), ignore_bots=ignore_bots)
        async with logged_in(client) as gateway:
            await gateway.message(message(1, 111, "human"))
            await gateway.message(message(2, 111, "mine", author=user(BOT_ID, "me", bot=True)))
            await gateway.message(message(3, 111, "bot", author=user(888, "other", bot=True)))
            await gateway.message(message(4, 111, "", kind=6))  # "pinned a message"
            await gateway.message(message(5, 111, "end"))
            await turns.wait(len(expected))  # the skipped ones' dispatches ran before "end"'s
        assert turns.by_key["discord:111"] == expected


# -- commands on the control lane ------------------------------------------------------


async def test_stop_interrupts_the_turn_in_flight_and_is_handled(fake: FakeDiscord) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()
    events: list[tuple[str, str]] = []

    class Poet(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            if message.content == "write a poem":
                started.set()
                try:
                    await asyncio.Event().wait()  # an LLM that takes its time
                except asyncio.CancelledError:
                    events.append(("interrupted", message.content))
                    raise
            events.append((command_of(message) or "text", message.content))
            if command_of(message) == "stop":
                stopped.set()

    client = new_client()
    bridge = inorder_for(client, Poet)
    async with logged_in(client) as gateway:
        await gateway.message(message(1, 111, "write a poem"))
        await asyncio.wait_for(started.wait(), WAIT)
        await gateway.message(message(2, 111, "/Stop please"))
        await asyncio.wait_for(stopped.wait(), WAIT)
        await gateway.message(message(3, 111, "thanks"))
        await asyncio.wait_for(bridge.runtime.wait_idle(), WAIT)
        stats = bridge.runtime.stats()
    assert events == [
        ("interrupted", "write a poem"),
        ("stop", "/Stop please"),
        ("text", "thanks"),
    ]
    assert stats["interrupted"] == 1


async def test_a_clear_command_drops_what_waits(fake: FakeDiscord) -> None:
    release, started = asyncio.Event(), asyncio.Event()
    turns = Turns()

    class Slow(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            if message.content == "first":
                started.set()
                await release.wait()
            turns.add(ctx, message)

    routed = asyncio.Event()
    client = new_client()

    @client.event
    async def on_message(message: discord.Message) -> None:  # awaited after the bridge's
        if message.content == "?reset":
            routed.set()

    bridge = inorder_for(client, Slow, clears=("reset",), prefix="?")
    async with logged_in(client) as gateway:
        await gateway.message(message(1, 111, "first"))
        await asyncio.wait_for(started.wait(), WAIT)
        await gateway.message(message(2, 111, "second"))
        await gateway.message(message(3, 111, "third"))
        await gateway.message(message(4, 111, "?reset"))
        await asyncio.wait_for(routed.wait(), WAIT)
        release.set()
        await turns.wait(2)
        await asyncio.wait_for(bridge.runtime.wait_idle(), WAIT)
        stats = bridge.runtime.stats()
    assert turns.by_key["discord:111"] == ["first", "?reset"]
    assert stats["dropped"] == 2


def test_command_of_reads_a_prefix_and_a_word() -> None:
    state = discord.Client(intents=discord.Intents.default())._connection
    channel = discord.PartialMessageable(state=state, id=111)

    def of(content: str, *prefixes: str) -> str | None:
        built = discord.Message(state=state, channel=channel, data=message(1, 111, content))  # type: ignore[arg-type]
        assert msg_id_of(built) == "discord:1"
        return command_of(built, prefixes) if prefixes else command_of(built)

    assert of("!stop") == "stop"
    assert of("/STOP now") == "stop"
    assert of("!cancel\nthat") == "cancel"
    assert of("stop") is None
    assert of("! stop") is None
    assert of("!stop!") is None
    assert of("?stop") is None
    assert of("?stop", "?") == "stop"
    assert of("!!stop", "!", "!!") == "stop"
    assert of("") is None


# -- redelivery ------------------------------------------------------------------------


async def test_a_redelivered_message_is_handled_once(fake: FakeDiscord) -> None:
    turns = Turns()
    client = new_client()
    bridge = inorder_for(client, recorder(turns))
    async with logged_in(client) as gateway:
        hello = message(42, 111, "hello")
        await gateway.message(hello)
        await gateway.message(hello)  # a resumed session replays the event
        await gateway.message(message(43, 111, "after"))
        await turns.wait(2)
        await asyncio.wait_for(bridge.runtime.wait_idle(), WAIT)
        stats = bridge.runtime.stats()
    assert turns.by_key["discord:111"] == ["hello", "after"]
    assert stats["duplicates"] == 1


# -- a cluster run ---------------------------------------------------------------------


async def test_a_cluster_run_carries_the_discord_message_through_redis(
    fake: FakeDiscord, redis_url: str
) -> None:
    seen: list[tuple[type, int, str, bool]] = []
    received: list[discord.Message] = []
    done = asyncio.Event()

    class Replier(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            seen.append(
                (type(message), message.id, message.content, message._state is client._connection)
            )
            received.append(message)
            await message.channel.send(f"re {message.content}")
            done.set()

    client = new_client()
    originals: list[discord.Message] = []

    @client.event
    async def on_message(message: discord.Message) -> None:  # the parser's own object
        originals.append(message)

    cluster = RedisCluster(
        redis_url, n_shards=4, lease_ttl=1.0, tick=0.05, member_ttl=0.5, join_grace=0.0
    )
    inorder_for(client, Replier, cluster=cluster, idle_timeout=None)
    async with logged_in(client) as gateway:  # login starts the runtime, close stops it
        await gateway.message(message(1234, 111, "through redis"))
        await asyncio.wait_for(done.wait(), WAIT)
    assert seen == [(discord.Message, 1234, "through redis", True)]
    assert received[0] is not originals[0]  # decoded from what Redis carried, not passed along
    assert fake.posted == [(111, "re through redis")]


# -- Discord's 429 ---------------------------------------------------------------------


@pytest.mark.parametrize("via", [True, False], ids=["discord_429s", "cloudflare_429"])
async def test_a_429_reaching_the_handler_reruns_the_same_message_after_discords_wait(
    fake: FakeDiscord, via: bool
) -> None:
    if via:  # discord.py retries four itself (sleeping 0.01 s each); the fifth reaches us
        fake.rate_limit(times=5, retry_after=0.01, header="0.05")
    else:  # no Via header: discord.py takes it for a Cloudflare block and raises at once
        fake.rate_limit(times=1, retry_after=0.0, header="0.05", via=False)
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    done = asyncio.Event()

    class Replier(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            attempts.append(loop.time())
            await message.channel.send(f"re {message.content}")
            done.set()

    client = new_client()
    bridge = inorder_for(client, Replier)
    async with logged_in(client) as gateway:
        await gateway.message(message(1, 111, "hi"))
        await asyncio.wait_for(done.wait(), WAIT)
        stats = bridge.runtime.stats()
    assert fake.posted == [(111, "re hi")]
    assert fake.posts == (6 if via else 2)
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.045  # the server's Retry-After, 0.05 s
    assert (stats["retry_afters"], stats["failed"], stats["handled"]) == (1, 0, 1)


async def test_what_discord_py_raises_for_a_429_maps_to_its_wait(fake: FakeDiscord) -> None:
    client = new_client(max_ratelimit_timeout=30.0)
    await client.login("token")
    try:
        channel = client.get_partial_messageable(111)
        fake.rate_limit(times=1, retry_after=42.5, header="43")  # past max_ratelimit_timeout
        with pytest.raises(discord.RateLimited) as limited:
            await channel.send("hi")
        assert retry_after_of(limited.value) == 42.5
        fake.answer(429, "<html>1015</html>", {"Content-Type": "text/html"})  # no wait named
        with pytest.raises(discord.HTTPException) as blocked:
            await channel.send("hi")
        assert blocked.value.status == 429
        assert retry_after_of(blocked.value) == DEFAULT_RETRY_AFTER
        fake.answer(403, {"message": "Missing Access", "code": 50001}, {})
        with pytest.raises(discord.Forbidden) as forbidden:
            await channel.send("hi")
        assert retry_after_of(forbidden.value) is None
        assert retry_after_of(ValueError("429")) is None
    finally:
        await client.close()


# -- the lifecycle ---------------------------------------------------------------------


def _state(bridge: Bridge | None) -> str:
    return "-" if bridge is None else str(bridge.runtime.stats()["state"])


@pytest.mark.parametrize("how", ["subclass", "assigned", "bot_subclass", "none"])
async def test_login_starts_the_runtime_after_the_users_setup_hook_and_close_stops_it_first(
    fake: FakeDiscord, how: str
) -> None:
    calls: list[tuple[str, str]] = []
    bridge: Bridge | None = None
    turns = Turns()

    class Mine(discord.Client):
        async def setup_hook(self) -> None:
            calls.append(("setup_hook", _state(bridge)))

        async def close(self) -> None:
            calls.append(("close", _state(bridge)))
            await super().close()

    class MyBot(commands.Bot):
        async def setup_hook(self) -> None:
            calls.append(("setup_hook", _state(bridge)))

        async def close(self) -> None:
            calls.append(("close", _state(bridge)))
            await super().close()

    intents = discord.Intents.default()
    intents.message_content = True
    client: discord.Client
    if how == "subclass":
        client = Mine(intents=intents)
    elif how == "bot_subclass":
        client = MyBot(command_prefix="?", intents=intents)
    else:
        client = discord.Client(intents=intents)
    if how == "assigned":
        own_close = client.close

        async def setup_hook() -> None:
            calls.append(("setup_hook", _state(bridge)))

        async def close() -> None:
            calls.append(("close", _state(bridge)))
            await own_close()

        client.setup_hook = setup_hook  # type: ignore[method-assign]
        client.close = close  # type: ignore[method-assign]
    bridge = inorder_for(client, recorder(turns))
    assert _state(bridge) == "new"
    await client.login("token")
    try:
        assert bridge.running
        await Gateway(client).message(message(1, 111, "hi"))
        await turns.wait(1)
    finally:
        await client.close()
    assert _state(bridge) == "stopped"
    assert client.is_closed()
    if how != "none":  # the user's hook ran first, their close after the runtime stopped
        assert calls == [("setup_hook", "new"), ("close", "stopped")]
    await client.close()  # a second close is harmless


async def test_async_with_bridge_drives_a_client_that_never_logs_in(fake: FakeDiscord) -> None:
    turns = Turns()
    client = new_client()
    await client._async_setup_hook()  # what `async with client:` does, without a login
    bridge = inorder_for(client, recorder(turns))
    async with bridge:
        assert bridge.running
        await Gateway(client).message(message(1, 111, "hi"))
        await turns.wait(1)
    assert _state(bridge) == "stopped"
    await client.close()


async def test_close_from_a_handler_closes_the_client_once_the_stop_is_done(
    fake: FakeDiscord,
) -> None:
    closed = asyncio.Event()
    turns = Turns()

    class Admin(UserActor):
        async def on_message(self, message: discord.Message, ctx: Context) -> None:
            await client.close()  # an admin "!shutdown": returns, the stop drains this turn
            turns.add(ctx, message)

    class Mine(discord.Client):
        async def close(self) -> None:
            closed.set()
            await super().close()

    intents = discord.Intents.default()
    intents.message_content = True
    client = Mine(intents=intents)
    bridge = inorder_for(client, Admin)
    await client.login("token")
    await Gateway(client).message(message(1, 111, "!shutdown"))
    await asyncio.wait_for(closed.wait(), WAIT)
    assert turns.by_key["discord:111"] == ["!shutdown"]
    assert _state(bridge) == "stopped"
    await client.close()
    assert client.is_closed()


async def test_a_setup_hook_assigned_after_the_wiring_is_named_when_a_message_comes(
    fake: FakeDiscord,
) -> None:
    errors: list[BaseException | None] = []
    failed = asyncio.Event()
    client = new_client()
    inorder_for(client, recorder(Turns()))

    async def setup_hook() -> None:
        pass

    async def on_error(event: str, *args: Any, **kwargs: Any) -> None:
        errors.append(sys.exc_info()[1])
        failed.set()

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    client.on_error = on_error  # type: ignore[method-assign]
    async with logged_in(client) as gateway:
        await gateway.message(message(1, 111, "hi"))
        await asyncio.wait_for(failed.wait(), WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], actors.RuntimeStopped)
    assert "setup_hook" in str(errors[0])


# -- the codec -------------------------------------------------------------------------


async def test_a_message_is_journaled_as_its_gateway_payload_and_comes_back_bound(
    fake: FakeDiscord,
) -> None:
    turns = Turns()
    client = new_client()
    bridge = inorder_for(client, recorder(turns))
    attachment = {"id": "55", "filename": "a.png", "size": 10, "url": "u", "proxy_url": "p"}
    payload = message(
        77,
        111,
        "look <@555> <@&444>",
        attachments=[attachment],
        embeds=[{"type": "rich", "title": "T", "description": "D"}],
        mentions=[user(555, "bob")],
        mention_roles=["444"],
        activity={"type": 1, "party_id": "p1"},  # kept by the payload, not by a rebuild
    )
    async with logged_in(client) as gateway:
        await gateway.message(payload)
        await gateway.message(message(78, 999, "a dm", guild_id=None))
        await turns.wait(2)
        original, dm = turns.messages
        data = bridge.codec.dumps(original)
        assert TAG.encode() in data  # under the adapter's tag, a name no release moves
        back = bridge.codec.loads(data)
        assert type(back) is discord.Message
        assert back is not original
        assert back._state is client._connection
        assert _fields(back) == _fields(original)
        assert back.activity == {"type": 1, "party_id": "p1"}
        # the cache is cold (no GUILD_CREATE yet): a partial channel, with its guild's id
        assert isinstance(back.channel, discord.PartialMessageable)
        assert (back.channel.id, back.channel.guild_id) == (111, GUILD_ID)
        await back.reply("got it")
        dm_back = bridge.codec.loads(bridge.codec.dumps(dm))
        assert isinstance(dm_back.channel, discord.DMChannel | discord.PartialMessageable)
        assert dm_back.channel.id == 999
        assert dm_back.guild is None
        await dm_back.channel.send("dm reply")
        # once the guild is cached, the channel is the cached one
        await gateway.event("GUILD_CREATE", guild(GUILD_ID, {111: "general"}))
        warm = bridge.codec.loads(bridge.codec.dumps(original))
        assert warm.channel is client.get_channel(111)
        assert isinstance(warm.channel, discord.TextChannel)
        assert warm.guild is not None
        assert warm.guild.id == GUILD_ID
    assert fake.posted == [(111, "got it"), (999, "dm reply")]


async def test_a_message_never_seen_on_the_gateway_is_rebuilt_from_its_fields(
    fake: FakeDiscord,
) -> None:
    client = new_client()
    bridge = inorder_for(client, recorder(Turns()))
    replied_to = message(80, 111, "the question")
    fake.stored[81] = message(
        81,
        111,
        "an answer <@&444>",
        attachments=[{"id": "56", "filename": "b.txt", "size": 3, "url": "u", "proxy_url": "p"}],
        embeds=[{"type": "rich", "title": "T"}],
        mentions=[user(555, "bob")],
        mention_roles=["444"],
        message_reference={"message_id": "80", "channel_id": "111", "guild_id": str(GUILD_ID)},
        referenced_message=replied_to,
        type=19,
        edited_timestamp="2025-01-02T00:00:00.000000+00:00",
    )
    async with logged_in(client):
        channel = client.get_partial_messageable(111, guild_id=GUILD_ID)
        fetched = await channel.fetch_message(81)  # over HTTP: never captured
        with structlog.testing.capture_logs() as logs:
            back = bridge.codec.loads(bridge.codec.dumps(fetched))
        assert [e["event"] for e in logs] == []  # DEBUG: not at the default level
        assert _fields(back) == _fields(fetched)
        assert back.edited_at == fetched.edited_at
        assert back.reference is not None
        assert back.reference.message_id == 80
        assert isinstance(back.reference.resolved, discord.Message)
        assert back.reference.resolved.content == "the question"
        assert isinstance(back.author, discord.Member)
        assert back.author.nick == "ali"
        again = bridge.codec.loads(bridge.codec.dumps(back))  # kept at decode: exact now
        assert _fields(again) == _fields(back)


def _fields(m: discord.Message) -> tuple[Any, ...]:
    return (
        m.id,
        m.channel.id,
        m.guild.id if m.guild is not None else getattr(m.channel, "guild_id", None),
        m.content,
        m.type,
        type(m.author),
        m.author.id,
        m.author.name,
        getattr(m.author, "nick", None),
        list(getattr(m.author, "_roles", ())),
        [(a.id, a.filename, a.size) for a in m.attachments],
        [e.to_dict() for e in m.embeds],
        [u.id for u in m.mentions],
        m.raw_role_mentions,
        m.created_at,
        m.nonce,
        m.flags.value,
        m.pinned,
    )


# -- wiring errors and the import ------------------------------------------------------


async def test_bad_arguments_raise_at_the_call() -> None:
    echo = recorder(Turns())
    with pytest.raises(TypeError, match=r"discord\.Client"):
        inorder_for("a client", echo)  # type: ignore[arg-type]
    client = new_client()
    with pytest.raises(TypeError, match="key must be a callable"):
        inorder_for(client, echo, key="channel")  # type: ignore[arg-type]
    for prefix in ("", "a b", [], ["!", 5], "123456789"):
        with pytest.raises(ValueError, match="prefix"):
            inorder_for(client, echo, prefix=prefix)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_bots"):
        inorder_for(client, echo, ignore_bots="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not the str"):
        inorder_for(client, echo, interrupts="stop")
    with pytest.raises(ValueError, match="command"):
        inorder_for(client, echo, clears=("!reset",))
    with pytest.raises(ValueError, match="priority"):
        inorder_for(client, echo, priority=0)
    bridge = inorder_for(client, echo)
    with pytest.raises(ValueError, match="already wired"):
        inorder_for(client, echo)
    assert "discord" in repr(bridge)


async def test_no_message_content_intent_is_warned_about() -> None:
    client = discord.Client(intents=discord.Intents.default())
    with structlog.testing.capture_logs() as logs:
        inorder_for(client, recorder(Turns()))
    assert [e["event"] for e in logs] == ["discord_message_content_intent_missing"]


def test_importing_the_adapter_without_discord_py_names_the_extra() -> None:
    code = "import sys; sys.modules['discord'] = None; import supervisors.adapters.discordpy"
    done = subprocess.run(
        [sys.executable, "-P", "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_DIR)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "ImportError: supervisors.adapters.discordpy needs discord.py" in done.stderr
    assert "pip install 'inorder[discord]'" in done.stderr


def test_the_example_without_a_token_says_what_it_would_do() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "examples.discord_bot"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(PACKAGE_DIR)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "DISCORD_TOKEN" in done.stdout
    assert "!stop" in done.stdout


# -- a durable run killed with SIGKILL -------------------------------------------------


def child(journal: Path, facts: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-P", str(CHILD), str(PACKAGE_DIR), str(journal), str(facts), mode],
        stdout=subprocess.PIPE if mode == "hold" else subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.timeout(120)
def test_a_killed_durable_bot_replays_its_messages_as_discord_messages(tmp_path: Path) -> None:
    journal, facts = tmp_path / "journal.db", tmp_path / "facts"
    holder = child(journal, facts, "hold")
    try:
        assert holder.stdout is not None
        lines = {holder.stdout.readline().strip(), holder.stdout.readline().strip()}
        assert lines == {"holding", "sent"}
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    store = SQLiteJournal(journal)
    try:
        assert store.pending_count() == 3  # q in flight, m1 behind it, d1 (maybe started)
    finally:
        store.close()
    after = child(journal, facts, "after")
    try:
        assert after.wait(60) == 0
    finally:
        if after.poll() is None:
            os.kill(after.pid, signal.SIGKILL)
            after.wait(30)
    found = facts.read_text().splitlines()
    held = [line for line in found if line.startswith("T hold")]
    assert held[0].startswith("T hold 111 q ")
    assert not any(" m1 " in line for line in held)  # it waited behind q
    replayed = [line for line in found if line.startswith("T after")]
    guild_turn = "Message PartialMessageable 222 Member alice"
    assert [line for line in replayed if line.startswith("T after 111")] == [
        f"T after 111 q {guild_turn} ['notes.txt'] 1 1",  # replayed first, with its fields
        f"T after 111 m1 {guild_turn} [] 1 1",
        f"T after 111 m3 {guild_turn} [] 1 0",  # the new one after them
    ]
    assert [line for line in replayed if line.startswith("T after 999")] == [
        "T after 999 d1 Message PartialMessageable None User alice [] 1 1",
    ]
    replies = [line for line in found if line.startswith("R ")]
    assert sorted(replies) == ["R 111 re m1", "R 111 re m3", "R 111 re q", "R 999 re d1"]
    assert replies.index("R 111 re q") < replies.index("R 111 re m1") < replies.index("R 111 re m3")
    store = SQLiteJournal(journal)
    try:
        assert store.pending_count() == 0
    finally:
        store.close()
