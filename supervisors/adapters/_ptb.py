"""The python-telegram-bot adapter's implementation (the surface is `ptb.py`).

`inorder_for(application, Bot)` adds one `TypeHandler(Update)` in its own group
(-1 by default: before the application's other handlers). For every update it
finds the key (`key(update)`), the command and the id, awaits `Bridge.route`, and
stops the update there (`ApplicationHandlerStop`), so that no other handler of
the application handles it a second time; an update whose key is None goes on
to the application's other handlers untouched.

The runtime starts in `post_init` and stops in `post_stop` (then the bot can
still send while the runtime drains), with `post_shutdown` as a fallback, each
chained before (start) or after (stop) a hook the application already had.
Those three run under `run_polling()`/`run_webhook()`; an application driven by
hand (`async with application:`) drives the bridge the same way: `async with
application, bridge:`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.error import RetryAfter as TelegramRetryAfter
from telegram.ext import Application, ApplicationHandlerStop, TypeHandler

from supervisors.adapters._bridge import DEFAULT_PRIORITY, Bridge
from supervisors.adapters._telegram import chat_key, command_in, msg_id, topic_key, user_key

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from telegram import Bot

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

#: The codec tag of a journaled `telegram.Update`: its Bot API JSON.
TAG = "telegram.Update"

_AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def by_chat(update: Update) -> str | None:
    """`"telegram:{chat_id}"`: one actor per chat (the default).

    An update without a chat (an inline query, a poll answer) goes to its user's
    key, `"telegram:{user_id}"`, which is that user's private chat; an update
    with neither (a poll's new state) is left to the application.
    """
    return chat_key(update.effective_chat, update.effective_user)


def by_topic(update: Update) -> str | None:
    """`"telegram:{chat_id}:{thread_id}"` for a message in a forum topic, else `by_chat`.

    Each topic of a forum supergroup then has its own order; the chat's other
    updates share the chat's key.
    """
    message = update.effective_message
    thread = message.message_thread_id if message is not None and message.is_topic_message else None
    return topic_key(update.effective_chat, thread, update.effective_user)


def by_user(update: Update) -> str | None:
    """`"telegram:user:{user_id}"`: one actor per user, across every chat they write in."""
    return user_key(update.effective_user)


def msg_id_of(update: Update) -> str:
    """`"telegram:{update_id}"`: Telegram redelivers an update with the same id."""
    return msg_id(update.update_id)


def command_of(update: Update, username: str | None = None) -> str | None:
    """The command a message starts with (`"/stop@MyBot now"` -> `"stop"`), lowercase.

    None for anything else, and for a command addressed to another bot
    (`/stop@OtherBot`) when `username` (this bot's) is known.
    """
    message = update.effective_message
    return command_in(None if message is None else message.text, username)


def retry_after_of(error: BaseException) -> float | None:
    """The seconds Telegram's flood control asks for, if `error` is its `RetryAfter`."""
    if not isinstance(error, TelegramRetryAfter):
        return None
    # The slot, not the property: the property's type depends on PTB_TIMEDELTA and
    # warns of a deprecation when it is an int.
    wait: Any = getattr(error, "_retry_after", None)
    if isinstance(wait, dt.timedelta):
        return max(wait.total_seconds(), 0.0)
    return None


def inorder_for(
    application: _AnyApplication,
    actor_factory: Callable[[str | int], UserActor],
    *,
    key: Callable[[Update], str | None] = by_chat,
    interrupts: Collection[str] = ("stop", "cancel"),
    clears: Collection[str] = (),
    priority: int = DEFAULT_PRIORITY,
    group: int = -1,
    send_timeout: float | None = 30.0,
    drain: bool = True,
    stop_timeout: float = 10.0,
    **runtime_options: Any,
) -> Bridge:
    """Wire a runtime of `actor_factory` into `application`; returns the `Bridge`.

    Every update goes to `key(update)`'s actor as the `telegram.Update` itself,
    with `msg_id="telegram:{update_id}"`; a message starting with a command named
    in `interrupts` (`/stop`, `/cancel`) is sent at `priority` with
    `interrupt=True`, one named in `clears` with `clear=True`. The other keywords
    go to `Runtime` (`store=`, `cluster=`, `idle_timeout=`, ...). The runtime's
    codec learns `telegram.Update` (its JSON, rebuilt bound to `application.bot`).

    Raises `TypeError` or `ValueError` for a bad argument, here.
    """
    if not isinstance(application, Application):
        msg = f"inorder_for() takes a telegram.ext.Application, got {application!r}"
        raise TypeError(msg)
    if not callable(key):
        msg = f"key must be a callable of an Update, got {key!r}"
        raise TypeError(msg)
    if isinstance(group, bool) or not isinstance(group, int):
        msg = f"group must be an int (a handler group of the application), got {group!r}"
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
    bot = application.bot

    def decode(data: Any) -> Update:
        return Update.de_json(data, bot)

    bridge.register(Update, tag=TAG, encode=Update.to_dict, decode=decode)

    async def take(update: Update, _context: Any) -> None:
        command = command_of(update, _username(bot))
        if await bridge.route(update, key(update), msg_id_of(update), command):
            raise ApplicationHandlerStop

    application.add_handler(TypeHandler(Update, take), group=group)
    _chain(application, bridge)
    return bridge


def _username(bot: Bot) -> str | None:
    try:
        return bot.username
    except RuntimeError:  # not initialized (no getMe yet): any addressee is taken as ours
        return None


def _chain(application: _AnyApplication, bridge: Bridge) -> None:
    """Hook the bridge's start and stop into the application's own callbacks."""
    post_init, post_stop, post_shutdown = (
        application.post_init,
        application.post_stop,
        application.post_shutdown,
    )

    async def started(app: _AnyApplication) -> None:
        await bridge.start()  # first: the user's post_init may already send
        if post_init is not None:
            await post_init(app)

    async def stopped(app: _AnyApplication) -> None:
        try:
            if post_stop is not None:
                await post_stop(app)
        finally:
            await bridge.stop()

    async def shut_down(app: _AnyApplication) -> None:
        try:
            await bridge.stop()  # a no-op after post_stop; else (stop_running() early) now
        finally:
            if post_shutdown is not None:
                await post_shutdown(app)

    application.post_init = started
    application.post_stop = stopped
    application.post_shutdown = shut_down
