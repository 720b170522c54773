"""What a Slack actor receives: `SlackEvent`, and the functions that read one.

Bolt hands its listeners plain dicts (the request body), so the adapter gives the
actor an object of its own: a `SlackEvent` holds the request's raw body (an Events
API `event_callback`, or a slash command's form fields) and the app's
`AsyncWebClient`, and reads the usual fields off it (`text`, `channel`,
`thread_ts`, `user`, `team`, `event_id`, `command`). `await event.say(text)`
answers where the message was written: in its thread if it was in one.

The codec stores the body and nothing else (its JSON, as Slack sent it, without
the legacy verification `token`, which is a secret), and rebuilds the event bound
to the client of the app the bridge was wired to: a replayed or cluster-delivered
event answers through the same client as a live one.

The key functions (`by_thread`, `by_channel`, `by_user`), `msg_id_of` and
`command_of` are the ones `inorder_for` uses; a user-written key is a callable of
a `SlackEvent` returning a key or None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from slack_sdk.web.async_client import AsyncWebClient
    from slack_sdk.web.async_slack_response import AsyncSlackResponse

__all__ = [
    "TAG",
    "SlackEvent",
    "by_channel",
    "by_thread",
    "by_user",
    "command_of",
    "msg_id_of",
]

#: The codec tag of a journaled `SlackEvent`: the request body Slack sent.
TAG: Final = "slack.SlackEvent"

_WORD: Final = re.compile(r"[A-Za-z0-9_]{1,32}")


@dataclass(frozen=True, slots=True)
class SlackEvent:
    """One Slack update as the actor gets it: Bolt's request `body` and the app's client.

    `body` is the Events API envelope (`{"type": "event_callback", "event": {...},
    "event_id": ..., "team_id": ...}`) or a slash command's fields (`{"command":
    "/stop", "channel_id": ..., "user_id": ..., "trigger_id": ...}`). Two events
    are equal when their bodies are; the client takes no part in that.
    """

    body: dict[str, Any]
    client: AsyncWebClient = field(compare=False, repr=False)

    @property
    def event(self) -> dict[str, Any]:
        """The inner event (`{"type": "message", "text": ..., ...}`); {} for a slash command."""
        inner = self.body.get("event")
        return inner if isinstance(inner, dict) else {}

    @property
    def command(self) -> str | None:
        """The slash command as typed (`"/stop"`), or None for an event."""
        value = self.body.get("command")
        return value if isinstance(value, str) else None

    @property
    def text(self) -> str:
        """The message's text (a slash command's arguments); "" if there is none."""
        value = self.body.get("text") if self.command is not None else self.event.get("text")
        return value if isinstance(value, str) else ""

    @property
    def channel(self) -> str | None:
        """The conversation's id (`C...`, `G...`, `D...` for a direct message)."""
        return (
            _str(self.body, "channel_id")
            if self.command is not None
            else _str(self.event, "channel")
        )

    @property
    def user(self) -> str | None:
        """The id of the user who wrote it (`U...`)."""
        if self.command is not None:
            return _str(self.body, "user_id")
        return _str(self.event, "user")

    @property
    def team(self) -> str | None:
        """The workspace the app received it in (`T...`; an org-wide install: `E...`)."""
        return (
            _str(self.body, "team_id")
            or _str(self.event, "team")
            or _str(self.body, "enterprise_id")
        )

    @property
    def ts(self) -> str | None:
        """The message's timestamp, its id within the channel; None for a slash command."""
        return _str(self.event, "ts")

    @property
    def thread_ts(self) -> str | None:
        """The thread's root timestamp if the message is in a thread, else None."""
        return _str(self.event, "thread_ts")

    @property
    def event_id(self) -> str | None:
        """Slack's id of the delivery (`Ev...`), the same on each of its retries."""
        return _str(self.body, "event_id")

    async def say(self, text: str = "", **kwargs: Any) -> AsyncSlackResponse:
        """Post `text` where the message was written (in its thread if it had one).

        Keywords go to `chat.postMessage` and win over the defaults: `thread_ts=event.ts`
        starts a thread under the message, `blocks=[...]` sends blocks. Raises
        slack_sdk's `SlackApiError` as `chat_postMessage` does (a 429 becomes
        inorder's `RetryAfter` in the handler: the same event runs again).
        """
        arguments: dict[str, Any] = {"channel": self.channel, "text": text}
        if self.thread_ts is not None:
            arguments["thread_ts"] = self.thread_ts
        arguments.update(kwargs)
        return await self.client.chat_postMessage(**arguments)


def _str(mapping: Mapping[str, Any], name: str) -> str | None:
    value = mapping.get(name)
    return value if isinstance(value, str) and value else None


# -- keys, ids and commands -------------------------------------------------------------


def by_thread(event: SlackEvent) -> str | None:
    """`"slack:{team}:{channel}:{thread_ts}"` in a thread, else `"slack:{team}:{channel}"`.

    The default: each thread is a conversation of its own, with its own order and
    its own actor, beside the channel's top-level messages (a slash command, which
    Slack sends without a thread, goes to the channel's key). None (the update is
    left to Bolt) for one without a channel.
    """
    key = by_channel(event)
    thread = event.thread_ts
    return key if key is None or thread is None else f"{key}:{thread}"


def by_channel(event: SlackEvent) -> str | None:
    """`"slack:{team}:{channel}"`: one actor per channel, its threads included."""
    team, channel = event.team, event.channel
    return None if team is None or channel is None else f"slack:{team}:{channel}"


def by_user(event: SlackEvent) -> str | None:
    """`"slack:{team}:user:{user}"`: one actor per user, across every channel and thread."""
    team, user = event.team, event.user
    return None if team is None or user is None else f"slack:{team}:user:{user}"


def msg_id_of(event: SlackEvent) -> str | None:
    """`"slack:{event_id}"`, which Slack keeps on every retry of a delivery.

    A slash command (which Slack does not retry) has no event id: its
    `trigger_id`, unique per invocation, stands in. None if there is neither.
    """
    found = event.event_id or _str(event.body, "trigger_id")
    return None if found is None else f"slack:{found}"


def command_of(
    event: SlackEvent, names: Collection[str] = (), bot_user_id: str | None = None
) -> str | None:
    """The command `event` gives, lowercase and without its "/"; None if it gives none.

    * a slash command: its name (`"/Stop"` -> `"stop"`);
    * a message whose text starts with "/" and a command name (`"/stop now"`);
    * a message whose whole text is one of `names` (`"stop"`, `"Cancel"`): Slack's
      message box takes "/" for its own commands, so in a chat "stop" is how a
      user says it. A leading mention of the bot (`"<@U0BOT> stop"`, as an
      `app_mention` has it) is ignored when `bot_user_id` is given.
    """
    if event.command is not None:
        name = event.command.removeprefix("/")
        return name.lower() if _WORD.fullmatch(name) else None
    text = event.text.strip()
    if bot_user_id:
        text = re.sub(rf"^<@{re.escape(bot_user_id)}(?:\|[^>]*)?>\s*", "", text)
    if text.startswith("/"):
        name = text[1:].split(maxsplit=1)[0] if text[1:2].strip() else ""
        return name.lower() if _WORD.fullmatch(name) else None
    word = text.lower()
    return word if word in {n.removeprefix("/").lower() for n in names} else None
