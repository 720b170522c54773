"""A Telegram bot on python-telegram-bot with inorder: each chat in order, /stop acts now.

Run it with ``TELEGRAM_BOT_TOKEN=... python -m examples.telegram_bot`` (``pip install
'inorder[telegram]'``). Every chat gets its own ``Agent`` actor: its messages are
answered one at a time and in order, while other chats go on. The "LLM call" is a
sleep that ``/stop`` cuts short (and ``/stop`` also drops what was waiting), a
redelivered update is answered once, Telegram's flood control pauses only the chat
it hit, and the journal in ``telegram_bot.db`` keeps accepted updates through a
crash: they are answered after the restart. Without a token it says what it would
do and exits 0, touching no network.
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
        message = update.effective_message
        if ctx.priority:  # /stop or /cancel: the reply in flight was cut already
            await message.reply_text("Stopped.")
            return
        self.turns += 1
        await asyncio.sleep(3)  # the LLM call; /stop cancels it here
        await message.reply_text(f"Reply #{self.turns} to {message.text!r}")


def main() -> int:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(
            f"{TOKEN_ENV} is not set, so nothing is sent. With a token from @BotFather this\n"
            "bot long-polls Telegram; each chat gets an actor that answers its messages in\n"
            "order after a 3 s 'LLM call', /stop cuts that call short and drops what waits,\n"
            "redelivered updates are answered once, and telegram_bot.db keeps what was\n"
            "accepted through a crash."
        )
        return 0
    from telegram.ext import ApplicationBuilder

    from supervisors.adapters.ptb import inorder_for

    application = ApplicationBuilder().token(token).build()
    inorder_for(application, Agent, clears=("stop",), store="telegram_bot.db")
    application.run_polling()  # the runtime starts and stops with it
    return 0


if __name__ == "__main__":
    sys.exit(main())
