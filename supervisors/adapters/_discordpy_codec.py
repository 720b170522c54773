"""discord.py's `Message` in inorder's codec, journaled as its gateway payload.

discord.py parses a MESSAGE_CREATE's JSON into a `Message` and keeps nothing of
the payload (the class has slots, no `__dict__` and no weak references). So
`Payloads.capture` puts itself in front of the client's MESSAGE_CREATE parser
(the entry of `ConnectionState.parsers` the gateway calls with the event's
`d`) and keeps the last `KEPT` payloads by message id, as the gateway sent them:

* **encode** (at `Runtime.send`, right after the parse; later for a dead letter
  or a message a handler sends on): the captured payload, the raw JSON exactly.
  A message it never saw (fetched over HTTP, built by hand) or one that has
  left the table is rebuilt from its fields instead (`rebuilt`: the common
  fields, not all of them; DEBUG `discord_payload_rebuilt`).
* **decode** (the replay after a restart, a cluster node's delivery): a
  `discord.Message` built by discord.py itself from the payload, on the
  client's `ConnectionState`, so its shortcuts use the client's HTTP. Its
  channel is the cached one (`client.get_channel`) or, before the cache is
  warm (a replay runs in `setup_hook`, before the gateway connects), a
  `PartialMessageable` with the guild's id, on which `message.channel.send()`
  and `message.reply()` still work. The payload is kept again, so a replayed
  message encodes exactly once more.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import discord

if TYPE_CHECKING:
    import datetime

__all__ = ["KEPT", "Payloads", "rebuilt"]

#: How many captured payloads are kept, the newest (discord.py's own message cache
#: keeps 1000 messages by default).
KEPT: Final = 1000

_MESSAGEABLE: Final = (
    discord.TextChannel,
    discord.VoiceChannel,
    discord.StageChannel,
    discord.Thread,
    discord.DMChannel,
    discord.GroupChannel,
)


class Payloads:
    """The gateway payloads of one client's recent messages, and the codec pair."""

    __slots__ = ("_client", "_kept", "_log")

    def __init__(self, client: discord.Client, log: Any) -> None:
        self._client = client
        self._kept: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._log = log

    def capture(self) -> None:
        """Keep each MESSAGE_CREATE payload before discord.py parses it.

        Raises `TypeError` if this discord.py has no such parser table.
        """
        parsers = getattr(self._client._connection, "parsers", None)
        parse = parsers.get("MESSAGE_CREATE") if isinstance(parsers, dict) else None
        if parsers is None or parse is None:
            msg = (
                f"discord.py {discord.__version__} has no MESSAGE_CREATE parser on the "
                "client's ConnectionState.parsers; inorder[discord] needs discord.py 2.4 to 2.x"
            )
            raise TypeError(msg)
        keep = self.keep

        def parse_message_create(data: Any) -> None:
            keep(data)
            parse(data)

        parsers["MESSAGE_CREATE"] = parse_message_create

    def keep(self, data: Any) -> None:
        """Remember `data` as the payload of the message it has the id of."""
        try:
            message_id = int(data["id"])
        except (KeyError, TypeError, ValueError):
            return  # malformed: discord.py's own parse reports it, in its own way
        kept = self._kept
        kept[message_id] = data
        kept.move_to_end(message_id)
        if len(kept) > KEPT:
            kept.popitem(last=False)

    def encode(self, message: discord.Message) -> dict[str, Any]:
        """The message's payload: the captured one, else one rebuilt from its fields."""
        payload = self._kept.get(message.id)
        if payload is not None:
            return payload
        self._log.debug("discord_payload_rebuilt", message_id=message.id)
        return rebuilt(message)

    def decode(self, payload: Any) -> discord.Message:
        """The `discord.Message` of `payload`, bound to the client."""
        if not isinstance(payload, dict):
            msg = f"a discord.Message is journaled as its payload dict, got {type(payload)}"
            raise TypeError(msg)
        client = self._client
        channel_id = int(payload["channel_id"])
        guild = payload.get("guild_id")
        guild_id = None if guild is None else int(guild)
        found = client.get_channel(channel_id)
        channel = (
            found
            if isinstance(found, _MESSAGEABLE)
            else client.get_partial_messageable(
                channel_id,
                guild_id=guild_id,
                type=discord.ChannelType.private if guild_id is None else None,
            )
        )
        message = discord.Message(state=client._connection, channel=channel, data=payload)  # type: ignore[arg-type]
        self.keep(payload)
        return message


def rebuilt(message: discord.Message) -> dict[str, Any]:
    """A MESSAGE_CREATE payload made from a message's fields, for one never captured.

    Kept: the ids, type, content, author (and, in a guild, the member's nick, roles,
    join date, flags), edit time, tts, pin, flags, nonce, mentions (users and roles),
    attachments, embeds, components, stickers, the webhook and application ids and
    the reference with the message it resolved to. Left out: reactions, the
    thread, a poll, interaction metadata, forwarded snapshots, a call, and the
    rarer parts of a system message.
    """
    payload: dict[str, Any] = {
        "id": str(message.id),
        "channel_id": str(message.channel.id),
        "type": message.type.value,
        "content": message.content,
        "author": _user(message.author),
        "timestamp": message.created_at.isoformat(),
        "edited_timestamp": _time(message.edited_at),
        "tts": message.tts,
        "mention_everyone": message.mention_everyone,
        "mentions": [_user(user) for user in message.mentions],
        "mention_roles": [str(role) for role in message.raw_role_mentions],
        "attachments": [attachment.to_dict() for attachment in message.attachments],
        "embeds": [embed.to_dict() for embed in message.embeds],
        "components": [component.to_dict() for component in message.components],
        "sticker_items": [
            {"id": str(item.id), "name": item.name, "format_type": item.format.value}
            for item in message.stickers
        ],
        "pinned": message.pinned,
        "flags": message.flags.value,
    }
    guild = message.guild
    guild_id = guild.id if guild is not None else getattr(message.channel, "guild_id", None)
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    for name in ("nonce", "webhook_id", "application_id", "position"):
        value = getattr(message, name)
        if value is not None:
            payload[name] = str(value) if name.endswith("_id") else value
    author = message.author
    if isinstance(author, discord.Member):
        payload["member"] = {
            "roles": [str(role) for role in author._roles],
            "nick": author.nick,
            "avatar": author.guild_avatar.key if author.guild_avatar is not None else None,
            "joined_at": _time(author.joined_at),
            "premium_since": _time(author.premium_since),
            "communication_disabled_until": _time(author.timed_out_until),
            "pending": author.pending,
            "flags": author.flags.value,
            "deaf": False,
            "mute": False,
        }
    reference = message.reference
    if reference is not None:
        payload["message_reference"] = reference.to_dict()
        resolved = reference.resolved
        if isinstance(resolved, discord.Message):
            payload["referenced_message"] = rebuilt(resolved)
        elif isinstance(resolved, discord.DeletedReferencedMessage):
            payload["referenced_message"] = None
    return payload


def _user(user: discord.User | discord.Member | discord.ClientUser) -> dict[str, Any]:
    avatar = user.avatar
    return {
        "id": str(user.id),
        "username": user.name,
        "discriminator": user.discriminator,
        "global_name": user.global_name,
        "avatar": avatar.key if avatar is not None else None,
        "bot": user.bot,
        "system": user.system,
        "public_flags": user.public_flags.value,
    }


def _time(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
