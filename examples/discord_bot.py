"""A Discord bot on inorder: each channel answered in order, ``!stop`` cuts a reply short.

Run it with ``DISCORD_TOKEN=... python -m examples.discord_bot`` (turn on the
Message Content intent for the bot in Discord's developer portal). Each channel
(a DM, a server channel, a thread) gets its own ``Agent`` actor: its messages are
answered one at a time, in order, while other channels go on. The "LLM" is a
stand-in that types for a few seconds; ``!stop`` (or ``/stop``) interrupts the
answer in flight, ``!reset`` also drops the messages waiting behind it. With
``INORDER_JOURNAL=bot.journal`` the run is durable: what was accepted before a
crash is answered after the restart. Without a token it says what it would do and
exits, touching no network.
"""

from __future__ import annotations

import asyncio
import os
import sys

import discord

from actors import Context, UserActor
from supervisors.adapters.discordpy import command_of, inorder_for

TOKEN_ENV = "DISCORD_TOKEN"
JOURNAL_ENV = "INORDER_JOURNAL"
THINKING_S = 4.0  # how long the stand-in LLM takes over an answer

PLAN = f"""\
No {TOKEN_ENV} is set, so nothing connects. With one, this bot would:
  * log in to Discord and answer each message in the channels it can read, every
    channel (DM, server channel, thread) in order, by its own actor;
  * think for {THINKING_S:.0f} s over each answer (showing "typing"), a stand-in for an LLM;
  * cut the answer in flight short on !stop or /stop, and drop what waits on !reset;
  * handle a message that Discord delivers twice once, and wait out Discord's 429s.
Set {TOKEN_ENV} (and {JOURNAL_ENV}=bot.journal for a durable run), then run it again.
"""


class Agent(UserActor):
    """One channel's conversation: its answers, in order, and the last few lines."""

    def __init__(self, key: str | int) -> None:
        super().__init__(key)
        self.history: list[str] = []

    async def on_message(self, message: discord.Message, ctx: Context) -> None:
        command = command_of(message)
        if command == "stop":  # it came on the control lane: the answer in flight is cut
            await message.reply("Stopped.")
            return
        if command == "reset":
            self.history.clear()
            await message.reply("Cleared: what you sent meanwhile is dropped.")
            return
        self.history = [*self.history[-9:], message.content]
        async with message.channel.typing():
            await asyncio.sleep(THINKING_S)  # the LLM call; !stop cancels it here
        await message.reply(f"({len(self.history)} lines so far) you said: {message.content}")


def main() -> int:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(PLAN, end="")
        return 0
    intents = discord.Intents.default()
    intents.message_content = True
    client = discord.Client(intents=intents)
    inorder_for(
        client,
        Agent,
        interrupts=("stop", "reset"),
        clears=("reset",),
        store=os.environ.get(JOURNAL_ENV) or None,
        idle_timeout=600.0,
    )
    client.run(token)  # login (the runtime starts in setup_hook), the gateway, close
    return 0


if __name__ == "__main__":
    sys.exit(main())
