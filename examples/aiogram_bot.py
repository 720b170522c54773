"""A Telegram bot on aiogram 3 with inorder: each chat in order, /stop acts now.

Run it with ``TELEGRAM_BOT_TOKEN=... python -m examples.aiogram_bot`` (``pip install
'inorder[aiogram]'``). Every chat gets its own ``Agent`` actor: its messages are
answered one at a time and in order, while other chats go on. The "LLM call" is a
sleep that ``/stop`` cuts short (and ``/stop`` also drops what was waiting), a
redelivered update is answered once, Telegram's flood control pauses only the chat
it hit, and the journal in ``aiogram_bot.db`` keeps accepted updates through a
crash: they are answered after the restart, for the same bot. Without a token it
says what it would do and exits 0, touching no network.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from actors import Context, UserActor

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"


class Agent(UserActor):
    """One per chat. State lives here, between turns."""

    async def on_start(self) -> None:
        self.turns = 0

    async def on_message(self, update: Any, ctx: Context) -> None:
        message = update.message
        if message is None:
            return  # an edit, a callback, ...: this bot answers messages only
        if ctx.priority:  # /stop or /cancel: the reply in flight was cut already
            await message.answer("Stopped.")
            return
        self.turns += 1
        await asyncio.sleep(3)  # the LLM call; /stop cancels it here
        await message.answer(f"Reply #{self.turns} to {message.text!r}")


async def run(token: str) -> None:
    from aiogram import Bot, Dispatcher

    from supervisors.adapters.aiogram3 import inorder_for

    bot, dispatcher = Bot(token), Dispatcher()
    inorder_for(dispatcher, Agent, bot=bot, clears=("stop",), store="aiogram_bot.db")
    await dispatcher.start_polling(bot)  # the runtime starts and stops with it


def main() -> int:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(
            f"{TOKEN_ENV} is not set, so nothing is sent. With a token from @BotFather this\n"
            "bot long-polls Telegram through aiogram; each chat gets an actor that answers\n"
            "its messages in order after a 3 s 'LLM call', /stop cuts that call short and\n"
            "drops what waits, redelivered updates are answered once, and aiogram_bot.db\n"
            "keeps what was accepted through a crash."
        )
        return 0
    asyncio.run(run(token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
