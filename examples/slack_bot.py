"""A Slack bot on Bolt for Python (async) with inorder: each conversation in order, "stop" acts now.

Run it with ``SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... python -m examples.slack_bot``
(Socket Mode), or with ``SLACK_SIGNING_SECRET`` instead of ``SLACK_APP_TOKEN`` to serve
Slack's Events API on port 3000 (``PORT``) at ``/slack/events`` (``pip install
'inorder[slack]'``). The Slack app subscribes to ``message.im`` (and
``message.channels`` for channels) and may define the slash commands ``/stop`` and
``/cancel``. Every channel, and every thread in it, gets its own ``Agent`` actor: its
messages are answered one at a time and in order (in the thread they were written
in), while other conversations go on. The "LLM call" is a sleep that ``/stop`` (or a
message saying just "stop") cuts short, also dropping what was waiting; Slack's
retries of a delivery are answered once, a ``ratelimited`` reply pauses only the
conversation it hit, and the journal in ``slack_bot.db`` keeps accepted messages
through a crash: they are answered after the restart. Without a token it says what
it would do and exits 0, touching no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TYPE_CHECKING

from actors import Context, UserActor

if TYPE_CHECKING:
    from supervisors.adapters.bolt import SlackEvent

TOKEN_ENV = "SLACK_BOT_TOKEN"
APP_TOKEN_ENV = "SLACK_APP_TOKEN"  # Socket Mode
SECRET_ENV = "SLACK_SIGNING_SECRET"  # the Events API over HTTP


class Agent(UserActor):
    """One per channel or thread. State lives here, between turns."""

    async def on_start(self) -> None:
        self.turns = 0

    async def on_message(self, event: SlackEvent, ctx: Context) -> None:
        if ctx.priority:  # stop or cancel: the reply in flight was cut already
            await event.say("Stopped.")
            return
        self.turns += 1
        await asyncio.sleep(3)  # the LLM call; stop cancels it here
        await event.say(f"Reply #{self.turns} to {event.text!r}")


def main() -> int:
    token, app_token = os.environ.get(TOKEN_ENV), os.environ.get(APP_TOKEN_ENV)
    secret = os.environ.get(SECRET_ENV)
    if not token:
        print(
            f"{TOKEN_ENV} is not set, so nothing is sent. With a bot token and {APP_TOKEN_ENV}\n"
            f"this bot connects to Slack in Socket Mode (with {SECRET_ENV} instead, it serves\n"
            "the Events API on port 3000); each channel and thread gets an actor that answers\n"
            "its messages in order after a 3 s 'LLM call', /stop (or 'stop') cuts that call\n"
            "short and drops what waits, Slack's retries are answered once, and slack_bot.db\n"
            "keeps what was accepted through a crash."
        )
        return 0
    if not app_token and not secret:
        print(
            f"{TOKEN_ENV} needs {APP_TOKEN_ENV} (Socket Mode) or {SECRET_ENV} (HTTP)",
            file=sys.stderr,
        )
        return 2
    from slack_bolt.async_app import AsyncApp

    from supervisors.adapters.bolt import inorder_for

    if not app_token:
        app = AsyncApp(token=token, signing_secret=secret)
        inorder_for(app, Agent, clears=("stop",), store="slack_bot.db")
        app.start(port=int(os.environ.get("PORT", "3000")))  # the runtime starts and stops with it
        return 0

    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    async def socket_mode() -> None:
        handler = AsyncSocketModeHandler(AsyncApp(token=token), app_token)
        inorder_for(handler, Agent, clears=("stop",), store="slack_bot.db")
        await handler.start_async()  # the runtime starts with it, and stops when it ends

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: start_async ends, the runtime stops
        asyncio.run(socket_mode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
