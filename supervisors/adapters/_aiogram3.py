"""The aiogram adapter's implementation (the surface is `aiogram3.py`).

`inorder_for(dispatcher, Bot)` adds one outer middleware on `dispatcher.update`:
it runs after aiogram's own context middleware and before any router. For every
update it finds the key (`key(update)`), the command and the id, awaits
`Bridge.route` and returns without calling the routers, so that no handler of
the dispatcher handles the update a second time; an update whose key is None
goes on to the routers untouched.

The runtime starts in the dispatcher's `startup` event (put first, so that the
user's own startup handlers may already send) and stops in its `shutdown` event
(registered last at wiring time, while the bot's session is still open: replies
can still be sent while the runtime drains). `start_polling()` and aiogram's
webhook set-up (`setup_application`) emit both; a dispatcher driven by hand
drives the bridge the same way: `async with bridge:`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiogram import Bot, Dispatcher
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware
from aiogram.exceptions import TelegramRetryAfter
from aiogram.types import Update

from supervisors.adapters._bridge import DEFAULT_PRIORITY, Bridge
from supervisors.adapters._telegram import chat_key, command_in, msg_id, topic_key, user_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from aiogram.types import TelegramObject

    from actors._user_actor import UserActor

__all__ = [
    "TAG",
    "by_chat",
    "by_topic",
    "by_user",
    "command_of",
    "inorder_for",
    "msg_id_of",
    "retry_after_of",
]

#: The codec tag of a journaled `aiogram.types.Update`: its Bot API JSON.
TAG = "aiogram.Update"


def by_chat(update: Update) -> str | None:
    """`"telegram:{chat_id}"`: one actor per chat (the default).

    An update without a chat (an inline query) goes to its user's key,
    `"telegram:{user_id}"`, which is that user's private chat; one with neither is
    left to the routers. The keys are the Telegram adapter's (`ptb`), so a bot
    moving between the two frameworks keeps its keys and journal.
    """
    context = UserContextMiddleware.resolve_event_context(update)
    return chat_key(context.chat, context.user)


def by_topic(update: Update) -> str | None:
    """`"telegram:{chat_id}:{thread_id}"` for an update in a forum topic, else `by_chat`."""
    context = UserContextMiddleware.resolve_event_context(update)
    return topic_key(context.chat, context.thread_id, context.user)


def by_user(update: Update) -> str | None:
    """`"telegram:user:{user_id}"`: one actor per user, across every chat they write in."""
    return user_key(UserContextMiddleware.resolve_event_context(update).user)


def msg_id_of(update: Update) -> str:
    """`"telegram:{update_id}"`: Telegram redelivers an update with the same id."""
    return msg_id(update.update_id)


def command_of(update: Update, username: str | None = None) -> str | None:
    """The command a message starts with (`"/stop@MyBot now"` -> `"stop"`), lowercase.

    None for anything else, and for a command addressed to another bot
    (`/stop@OtherBot`) when `username` (this bot's) is known.
    """
    message = update.message or update.edited_message or update.channel_post
    return command_in(None if message is None else message.text, username)


def retry_after_of(error: BaseException) -> float | None:
    """Telegram's wait in seconds, if `error` is aiogram's `TelegramRetryAfter`."""
    if isinstance(error, TelegramRetryAfter):
        return max(float(error.retry_after), 0.0)
    return None


def inorder_for(
    dispatcher: Dispatcher,
    actor_factory: Callable[[str | int], UserActor],
    *,
    bot: Bot | None = None,
    key: Callable[[Update], str | None] = by_chat,
    interrupts: Collection[str] = ("stop", "cancel"),
    clears: Collection[str] = (),
    priority: int = DEFAULT_PRIORITY,
    send_timeout: float | None = 30.0,
    drain: bool = True,
    stop_timeout: float = 10.0,
    **runtime_options: Any,
) -> Bridge:
    """Wire a runtime of `actor_factory` into `dispatcher`; returns the `Bridge`.

    Every update goes to `key(update)`'s actor as the `aiogram.types.Update` itself,
    with `msg_id="telegram:{update_id}"`; a message starting with a command named
    in `interrupts` (`/stop`, `/cancel`) is sent at `priority` with
    `interrupt=True`, one named in `clears` with `clear=True`. The other keywords
    go to `Runtime` (`store=`, `cluster=`, `idle_timeout=`, ...).

    `bot` is the bot a journaled update is rebuilt for (after a restart, or on
    another node of a cluster), so that `update.message.answer()` works on it; it
    is needed only with `store=` or `cluster=`, where leaving it out is a
    `TypeError` here. A live update keeps the bot that received it.
    """
    if not isinstance(dispatcher, Dispatcher):
        msg = f"inorder_for() takes an aiogram Dispatcher, got {dispatcher!r}"
        raise TypeError(msg)
    if bot is not None and not isinstance(bot, Bot):
        msg = f"bot must be an aiogram Bot, got {bot!r}"
        raise TypeError(msg)
    if bot is None and (
        runtime_options.get("store") is not None or runtime_options.get("cluster") is not None
    ):
        msg = "a store or a cluster journals updates: give bot= to rebuild them for (bot=bot)"
        raise TypeError(msg)
    if not callable(key):
        msg = f"key must be a callable of an Update, got {key!r}"
        raise TypeError(msg)
    bridge = Bridge(
        actor_factory,
        platform="telegram",
        translate=retry_after_of,
        interrupts=interrupts,
        clears=clears,
        priority=priority,
        send_timeout=send_timeout,
        drain=drain,
        stop_timeout=stop_timeout,
        runtime_options=runtime_options,
    )

    def encode(update: Update) -> Any:
        # The Bot API's own field names ("from", not "from_user"), as Telegram sent them.
        return update.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def decode(data: Any) -> Update:
        return Update.model_validate(data, context={"bot": bot})

    bridge.register(Update, tag=TAG, encode=encode, decode=decode)

    async def take(
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        receiver = data.get("bot")
        username = (await receiver.me()).username if isinstance(receiver, Bot) else None
        command = command_of(event, username)
        if await bridge.route(event, key(event), msg_id_of(event), command):
            return None  # taken: the routers do not see it
        return await handler(event, data)

    dispatcher.update.outer_middleware(take)

    async def started(**data: Any) -> None:
        await bridge.start()
        # This bot's username, asked once now: asked in the middleware, the first
        # updates' tasks would each wait for it, and could reach the runtime out of order.
        for one in {id(b): b for b in (bot, data.get("bot")) if isinstance(b, Bot)}.values():
            await one.me()

    async def stopped() -> None:
        await bridge.stop()

    dispatcher.startup.register(started)
    # First, so that the user's own startup handlers may already send.
    dispatcher.startup.handlers.insert(0, dispatcher.startup.handlers.pop())
    dispatcher.shutdown.register(stopped)
    return bridge
