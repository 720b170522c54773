"""discord.py 2 wired to a `Bridge`: a client's messages into per-channel actors.

`inorder_for(client, Bot, ...)` builds the bridge and hooks the client:

* **messages**: a `commands.Bot` gets a listener (`bot.add_listener`, beside any
  `on_message` and the bot's own command processing); a plain `Client`, which has
  no listeners, gets an `on_message` that routes, then awaits the one the user set
  (a subclass's method or an `@client.event`; one registered after the call is
  picked up in `setup_hook`, before any event). The bot's own messages, other
  bots' (unless `ignore_bots=False`) and system messages are not routed.
* **commands**: content starting with a prefix ("!" or "/" by default) and a
  word: `!stop` is the command "stop", sent on the control lane if named in
  `interrupts` or `clears`. Slash-command interactions are not messages and are
  not routed; nor are edits (MESSAGE_UPDATE).
* **lifecycle**: the client's `setup_hook` (its own first, then the runtime's
  start, which replays a journal) and `close` (the runtime drains and stops,
  then the client's own close) are replaced on the instance, chaining what was
  there; no subclass needed.
* **codec**: `discord.Message` is journaled as its gateway payload
  (`_discordpy_codec`).
* **rate limits**: `retry_after_of` turns what discord.py raises for a 429 into
  the seconds to wait.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import TYPE_CHECKING, Any, Final

import discord
from discord.ext import commands

from actors._errors import RuntimeStopped, StopFromHandler
from actors._logging import check_level, library_logger
from supervisors.adapters._bridge import DEFAULT_PRIORITY, Bridge
from supervisors.adapters._discordpy_codec import Payloads

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from actors._user_actor import UserActor

__all__ = [
    "DEFAULT_PREFIXES",
    "DEFAULT_RETRY_AFTER",
    "TAG",
    "by_channel",
    "by_user",
    "command_of",
    "inorder_for",
    "msg_id_of",
    "retry_after_of",
]

#: The codec tag of a journaled `discord.Message`: its gateway payload.
TAG: Final = "discord.Message"

#: The prefixes a command starts with: "!" (prefix-command bots' usual one), and "/",
#: which Discord sends as text when the bot registers no slash command of that name.
DEFAULT_PREFIXES: Final = ("!", "/")

#: The wait for a 429 that names none (a Cloudflare block has no JSON body).
DEFAULT_RETRY_AFTER: Final = 5.0

_WORD: Final = re.compile(r"([A-Za-z0-9_]{1,32})(?:\s|$)")


def by_channel(message: discord.Message) -> str:
    """`"discord:{channel_id}"`: one actor per channel, DM or thread (a thread is a channel)."""
    return f"discord:{message.channel.id}"


def by_user(message: discord.Message) -> str:
    """`"discord:user:{user_id}"`: one actor per author, across channels and guilds."""
    return f"discord:user:{message.author.id}"


def msg_id_of(message: discord.Message) -> str:
    """`"discord:{message_id}"`: a message id is unique across Discord, and kept on redelivery."""
    return f"discord:{message.id}"


def command_of(
    message: discord.Message, prefixes: Collection[str] = DEFAULT_PREFIXES
) -> str | None:
    """The command a message starts with, lowercase and without its prefix, or None.

    `"!stop"`, `"/Stop now"` -> `"stop"`; `"stop"`, `"! stop"` -> None. Longer
    prefixes are tried first.
    """
    return _command(message.content, _prefixes(prefixes))


def _command(content: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if content.startswith(prefix):
            word = _WORD.match(content, len(prefix))
            if word is not None:
                return word.group(1).lower()
    return None


def retry_after_of(error: BaseException) -> float | None:
    """The seconds Discord asked to wait, for a rate-limit error; None for any other.

    discord.py retries most 429s itself; what reaches a handler is `RateLimited`
    (the wait exceeded the client's `max_ratelimit_timeout`: its `retry_after`)
    or an `HTTPException` with status 429 (five 429s in a row, or a Cloudflare
    block: its `Retry-After` header, else `X-RateLimit-Reset-After`, else
    `DEFAULT_RETRY_AFTER`).
    """
    if isinstance(error, discord.RateLimited):
        return _seconds(error.retry_after)
    if isinstance(error, discord.HTTPException) and error.status == 429:
        headers = getattr(error.response, "headers", None) or {}
        for name in ("Retry-After", "X-RateLimit-Reset-After"):
            seconds = _seconds(headers.get(name))
            if seconds is not None:
                return seconds
        return DEFAULT_RETRY_AFTER
    return None


def _seconds(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def inorder_for(
    client: discord.Client,
    actor_factory: Callable[[str | int], UserActor],
    *,
    key: Callable[[discord.Message], str | None] = by_channel,
    interrupts: Collection[str] = ("stop", "cancel"),
    clears: Collection[str] = (),
    prefix: str | Collection[str] = DEFAULT_PREFIXES,
    ignore_bots: bool = True,
    priority: int = DEFAULT_PRIORITY,
    send_timeout: float | None = 30.0,
    drain: bool = True,
    stop_timeout: float = 10.0,
    **runtime_options: Any,
) -> Bridge:
    """Wire a runtime of `actor_factory` into `client`; see the module's docstring.

    `key(message)` names the actor (`by_channel`, `by_user`, or your own; None:
    not routed), `prefix` the command prefixes, `ignore_bots` whether other bots'
    messages are skipped. The rest go to `Bridge` and `Runtime(...)`. Raises
    `TypeError`/`ValueError` for bad arguments, and `ValueError` for a client
    already wired to a bridge.
    """
    if not isinstance(client, discord.Client):
        msg = f"inorder_for takes a discord.Client (or commands.Bot), got {type(client)}"
        raise TypeError(msg)
    if not callable(key):
        msg = f"key must be a callable (message -> str or None), got {key!r}"
        raise TypeError(msg)
    if not isinstance(ignore_bots, bool):
        msg = f"ignore_bots must be a bool, got {ignore_bots!r}"
        raise TypeError(msg)
    prefixes = _prefixes(prefix)
    if isinstance(getattr(client.setup_hook, "__self__", None), _Wiring):
        msg = f"{client!r} is already wired to an inorder bridge"
        raise ValueError(msg)
    level = check_level(runtime_options.get("log_level"))  # "debug" as the Runtime takes it
    log = library_logger(level).bind(platform="discord")
    bridge = Bridge(
        actor_factory,
        platform="discord",
        translate=retry_after_of,
        interrupts=interrupts,
        clears=clears,
        priority=priority,
        send_timeout=send_timeout,
        drain=drain,
        stop_timeout=stop_timeout,
        runtime_options=runtime_options,
    )
    payloads = Payloads(client, log)
    payloads.capture()
    bridge.register(discord.Message, tag=TAG, encode=payloads.encode, decode=payloads.decode)
    if not client.intents.message_content:
        # Without it, a message that does not mention the bot arrives with no content.
        log.warning("discord_message_content_intent_missing")
    _Wiring(client, bridge, key, prefixes, ignore_bots).install()
    return bridge


def _prefixes(prefix: str | Collection[str]) -> tuple[str, ...]:
    found = (prefix,) if isinstance(prefix, str) else tuple(prefix)
    for one in found:
        if not isinstance(one, str) or not one or len(one) > 8 or any(c.isspace() for c in one):
            msg = f"a prefix is 1 to 8 characters, none a space, got {one!r}"
            raise ValueError(msg)
    if not found:
        msg = "prefix takes at least one prefix"
        raise ValueError(msg)
    return tuple(sorted(set(found), key=len, reverse=True))  # "!!" before "!"


class _Wiring:
    """One client's hooks into one bridge: its messages, its `setup_hook`, its `close`."""

    def __init__(
        self,
        client: discord.Client,
        bridge: Bridge,
        key: Callable[[discord.Message], str | None],
        prefixes: tuple[str, ...],
        ignore_bots: bool,
    ) -> None:
        self.client = client
        self.bridge = bridge
        self.key = key
        self.prefixes = prefixes
        self.ignore_bots = ignore_bots
        # What was there before: a subclass's methods, or functions assigned to the client.
        self._setup_hook: Callable[[], Awaitable[None]] = client.setup_hook
        self._close: Callable[[], Awaitable[None]] = client.close
        self._on_message: Callable[[discord.Message], Awaitable[None]] | None = None
        self._listening = isinstance(client, commands.bot.BotBase)
        self._hooked = False  # our setup_hook ran
        self._closing: asyncio.Task[None] | None = None

    def install(self) -> None:
        client = self.client
        client.setup_hook = self.setup_hook  # type: ignore[method-assign]
        client.close = self.close  # type: ignore[method-assign]
        if isinstance(client, commands.bot.BotBase):
            client.add_listener(self.on_message, "on_message")
        else:
            self._claim_on_message()

    def _claim_on_message(self) -> None:
        """Make the client's `on_message` ours, keeping the one it had to await after."""
        current = getattr(self.client, "on_message", None)
        if current == self._chained:
            return
        self._on_message = current
        setattr(self.client, "on_message", self._chained)  # noqa: B010 (Client declares none)

    # -- the lifecycle -----------------------------------------------------------------

    async def setup_hook(self) -> None:
        """discord.py awaits it once, in `login`: the user's hook, then the runtime's start.

        After the user's, so that a journal's replay finds what it set up; before
        the gateway connects, so no update waits for the runtime.
        """
        await self._setup_hook()
        if not self._listening:
            self._claim_on_message()  # an `@client.event on_message` made after the wiring
        self._hooked = True
        await self.bridge.start()

    async def close(self) -> None:
        """The client's `close`: the runtime drains and stops, then the client's own close.

        Called from one of the runtime's handlers (an admin "!shutdown"), it cannot
        wait for the stop, which waits for that handler: the stop begins, the call
        returns, and the client closes once the stop is done.
        """
        try:
            await self.bridge.stop()
        except StopFromHandler:
            if self._closing is None:
                self._closing = asyncio.get_running_loop().create_task(self._close_when_stopped())
            return
        await self._close()

    async def _close_when_stopped(self) -> None:
        await self.bridge.stop()
        await self._close()

    # -- each message ------------------------------------------------------------------

    async def _chained(self, message: discord.Message) -> None:
        """A plain client's `on_message`: the bridge's, then the user's, even if it raised."""
        try:
            await self.on_message(message)
        finally:
            if self._on_message is not None:
                await self._on_message(message)

    async def on_message(self, message: discord.Message) -> None:
        """Route `message` to its key's actor, unless it is the bot's, a bot's or a system one."""
        author = message.author
        me = self.client.user
        if (
            (me is not None and author.id == me.id)
            or (author.bot and self.ignore_bots)
            or message.is_system()
        ):
            return
        try:
            await self.bridge.route(
                message,
                self.key(message),
                msg_id_of(message),
                _command(message.content, self.prefixes),
            )
        except RuntimeStopped as error:
            if self._hooked:
                raise
            msg = (
                f"{error} (the client's setup_hook never ran inorder's start: if it was "
                "replaced after inorder_for(...), assign it before the call, or start the "
                "bridge yourself: await bridge.start(), or async with bridge:)"
            )
            raise RuntimeStopped(msg) from error
