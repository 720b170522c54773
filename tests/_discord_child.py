"""The child process of tests/test_adapter_discord.py's SIGKILL test, and the fakes both use.

The fakes (no network; the parent test imports them from here):

* `FakeDiscord`: Discord's REST API on 127.0.0.1 (an aiohttp server), for
  discord.py's own HTTP stack pointed at it (`Route.BASE`): login's two GETs,
  fetching a message, and posting one, whose answers a test can queue (429s).
* `Gateway`: discord.py's own `DiscordWebSocket.received_message`, fed the JSON
  text of gateway events instead of a socket: the parse (MESSAGE_CREATE builds
  the `discord.Message` on the client's state) and the client's dispatch run as
  they do with Discord.
* `message(...)`, `guild(...)`: gateway payloads, shaped as Discord sends them.

Run as a script:

    python -P _discord_child.py PACKAGE_DIR JOURNAL FACTS MODE

Both modes log a `discord.Client` in against a `FakeDiscord` of their own, wired
by `inorder_for(client, Recorder, store=JOURNAL)`, and feed its gateway. `MODE`
"hold": three messages (q and m1 in guild channel 111, d1 in DM channel 999);
every handler writes its fact and hangs; "holding" is printed once q's handler
runs, "sent" once the three were routed (the client's own `on_message` runs after
the bridge's, so after each was durable). The parent then kills it with SIGKILL.
`MODE` "after": the same journal, replayed at login (in `setup_hook`); one new
message m3 follows on the gateway; each handler writes what it got and replies
with `message.channel.send`; once the four are handled the client closes and the
replies the fake server received are written as facts too. Facts are appended one
line per `os.write` on an `O_APPEND` descriptor, so a line written before the
SIGKILL is in the file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from typing import Any

import discord
from aiohttp import web
from discord.gateway import DiscordWebSocket

BOT_ID = 900
USER_ID = 333
GUILD_ID = 222
WHEN = "2025-01-01T12:00:00.000000+00:00"


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    """A user object, as in a message's `author`."""
    found: dict[str, Any] = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
        "public_flags": 0,
    }
    if bot:
        found["bot"] = True
    return found


def message(
    message_id: int,
    channel_id: int,
    content: str,
    *,
    author: dict[str, Any] | None = None,
    guild_id: int | None = GUILD_ID,
    kind: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A MESSAGE_CREATE payload (a guild message with its member, or a DM without)."""
    payload: dict[str, Any] = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author if author is not None else user(USER_ID, "alice"),
        "content": content,
        "timestamp": WHEN,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "type": kind,
        "flags": 0,
        "nonce": str(message_id * 7),
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["member"] = {
            "roles": ["444"],
            "nick": "ali",
            "joined_at": "2024-05-01T10:00:00.000000+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
        }
    payload.update(extra)
    return payload


def guild(guild_id: int, channels: dict[int, str]) -> dict[str, Any]:
    """A GUILD_CREATE payload with text channels `{id: name}` (the cache warming up)."""
    return {
        "id": str(guild_id),
        "name": "inorder lab",
        "icon": None,
        "owner_id": str(USER_ID),
        "roles": [{"id": str(guild_id), "name": "@everyone", "permissions": "0", "position": 0}],
        "channels": [
            {"id": str(cid), "type": 0, "name": name, "position": i, "permission_overwrites": []}
            for i, (cid, name) in enumerate(channels.items())
        ],
        "members": [],
        "member_count": 2,
        "emojis": [],
        "stickers": [],
        "features": [],
        "threads": [],
        "unavailable": False,
    }


class Gateway:
    """discord.py's gateway receive path for `client`, fed JSON text instead of a socket."""

    def __init__(self, client: discord.Client) -> None:
        ws = DiscordWebSocket(socket=None, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
        # What DiscordWebSocket.from_client sets after connecting, minus the socket.
        ws._connection = client._connection
        ws._discord_parsers = client._connection.parsers
        ws._dispatch = client.dispatch
        ws.shard_id = None
        self.ws = ws
        self.seq = 0

    async def event(self, name: str, data: dict[str, Any]) -> None:
        """Receive one dispatch (op 0) event, as Discord sends it."""
        self.seq += 1
        text = json.dumps({"op": 0, "t": name, "s": self.seq, "d": data})
        await self.ws.received_message(text)

    async def message(self, data: dict[str, Any]) -> None:
        await self.event("MESSAGE_CREATE", data)


class FakeDiscord:
    """Discord's REST API for a test, on 127.0.0.1; `api` is discord.py's `Route.BASE`."""

    def __init__(self) -> None:
        self.posted: list[tuple[int, str]] = []  # (channel id, content) answered 200
        self.posts = 0  # every POST, whatever its answer
        self.queued: list[tuple[int, dict[str, str], bytes]] = []  # the next POSTs' answers
        self.stored: dict[int, dict[str, Any]] = {}  # what GET .../messages/{id} answers
        self.api = ""
        self._ids = itertools.count(7_000_000)
        self._runner: web.AppRunner | None = None

    def answer(self, status: int, body: Any, headers: dict[str, str], *, times: int = 1) -> None:
        """Answer the next `times` POSTs with this instead of the message."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.queued += [(status, headers, data)] * times

    def rate_limit(
        self, *, times: int, retry_after: float, header: str | None, via: bool = True
    ) -> None:
        """Queue Discord's 429: JSON with `retry_after`; `via=False`: Cloudflare's, text."""
        headers = {"Content-Type": "application/json"} if via else {"Content-Type": "text/html"}
        if via:
            headers["Via"] = "1.1 google"
        if header is not None:
            headers["Retry-After"] = header
        body: Any = {"message": "You are being rate limited.", "retry_after": retry_after}
        self.answer(429, body if via else "<html>1015</html>", headers, times=times)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/oauth2/applications/@me", self._application)
        app.router.add_get("/api/v10/channels/{channel}/messages/{message}", self._fetch)
        app.router.add_post("/api/v10/channels/{channel}/messages", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.api = f"http://{host}:{port}/api/v10"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        # discord.py reads JSON only under exactly this content type, as Discord sends it
        headers = {"Content-Type": "application/json"}
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    async def _me(self, _: web.Request) -> web.Response:
        return self._json({**user(BOT_ID, "inorder-bot", bot=True), "verified": True})

    async def _application(self, _: web.Request) -> web.Response:
        return self._json(
            {
                "id": str(BOT_ID),
                "name": "inorder-bot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user(USER_ID, "alice"),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _fetch(self, request: web.Request) -> web.Response:
        found = self.stored.get(int(request.match_info["message"]))
        if found is None:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        return self._json(found)

    async def _post(self, request: web.Request) -> web.Response:
        self.posts += 1
        body = await request.json()
        if self.queued:
            status, headers, data = self.queued.pop(0)
            return web.Response(status=status, body=data, headers=headers)
        channel = int(request.match_info["channel"])
        self.posted.append((channel, body["content"]))
        sent = message(
            next(self._ids), channel, body["content"], author=user(BOT_ID, "b", bot=True)
        )
        return self._json(sent)


# -- the child -------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    package_dir, journal, facts_path, mode = argv[1:5]
    sys.path.insert(0, package_dir)
    from actors import Context, UserActor
    from supervisors.adapters.discordpy import inorder_for

    facts = os.open(facts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    handled: list[str] = []
    done = asyncio.Event()

    def fact(line: str) -> None:
        os.write(facts, (line + "\n").encode())

    async def run() -> None:
        fake = FakeDiscord()
        await fake.start()
        discord.http.Route.BASE = fake.api
        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(intents=intents)

        class Recorder(UserActor):
            async def on_message(self, message: discord.Message, ctx: Context) -> None:
                channel = message.channel
                fact(
                    f"T {mode} {channel.id} {message.content} {type(message).__name__} "
                    f"{type(channel).__name__} {getattr(channel, 'guild_id', None)} "
                    f"{type(message.author).__name__} {message.author.name} "
                    f"{[a.filename for a in message.attachments]} "
                    f"{int(message._state is client._connection)} {int(ctx.redelivered)}"
                )
                if mode == "hold":
                    if message.content == "q":
                        print("holding", flush=True)
                    await asyncio.Event().wait()  # killed here
                await channel.send(f"re {message.content}")
                handled.append(message.content)
                if len(handled) == 4:
                    done.set()

        routed = 0

        @client.event
        async def on_message(message: discord.Message) -> None:
            nonlocal routed
            routed += 1
            if mode == "hold" and routed == 3:
                print("sent", flush=True)  # all three routed, so durable

        inorder_for(client, Recorder, store=journal, idle_timeout=None)
        await client.login("token")  # its setup_hook starts the runtime: "after" replays
        gateway = Gateway(client)
        if mode == "hold":
            attachment = {
                "id": "55",
                "filename": "notes.txt",
                "size": 12,
                "url": "u",
                "proxy_url": "p",
            }
            await gateway.message(message(1001, 111, "q", attachments=[attachment]))
            await gateway.message(message(1002, 111, "m1"))
            await gateway.message(message(1003, 999, "d1", guild_id=None))
            await asyncio.Event().wait()
        await gateway.message(message(1004, 111, "m3"))
        await asyncio.wait_for(done.wait(), 20)
        await client.close()
        for channel_id, content in fake.posted:
            fact(f"R {channel_id} {content}")
        await fake.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
