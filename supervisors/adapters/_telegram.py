"""What the two Telegram adapters (`_ptb.py`, `_aiogram3.py`) share: Telegram's keys,
its update ids and its command syntax, from plain values.

Both frameworks give the same keys for the same update, so a bot that moves from
one framework to the other keeps its actors' keys, its journal and its dedup window.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Identified", "chat_key", "command_in", "msg_id", "topic_key", "user_key"]


class Identified(Protocol):
    """A chat or a user, of either framework: both have Telegram's `id`."""

    @property
    def id(self) -> int: ...


def chat_key(chat: Identified | None, user: Identified | None) -> str | None:
    """`"telegram:{chat_id}"`; an update without a chat (an inline query) goes to its
    user's private chat, whose id is the user's; one with neither has no key."""
    if chat is not None:
        return f"telegram:{chat.id}"
    return None if user is None else f"telegram:{user.id}"


def topic_key(
    chat: Identified | None, thread_id: int | None, user: Identified | None
) -> str | None:
    """`"telegram:{chat_id}:{thread_id}"` in a forum topic, else `chat_key`."""
    if chat is not None and thread_id is not None:
        return f"telegram:{chat.id}:{thread_id}"
    return chat_key(chat, user)


def user_key(user: Identified | None) -> str | None:
    """`"telegram:user:{user_id}"`: one actor per user, across every chat they write in."""
    return None if user is None else f"telegram:user:{user.id}"


def msg_id(update_id: int) -> str:
    """`"telegram:{update_id}"`: Telegram redelivers an update with the same id."""
    return f"telegram:{update_id}"


def command_in(text: str | None, username: str | None) -> str | None:
    """The command a message's text starts with (`"/stop@MyBot now"` -> `"stop"`),
    lowercase; None for other text, and for a command addressed to another bot
    (`/stop@OtherBot`) when `username` (this bot's) is known."""
    if not text or not text.startswith("/"):
        return None
    name, _, addressee = text.split(maxsplit=1)[0][1:].partition("@")
    if addressee and username is not None and addressee.lower() != username.lower():
        return None
    return name.lower() or None
