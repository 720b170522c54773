"""The child process of tests/test_adapter_telegram.py's crash test: a bot killed mid-reply.

Run as a script, never imported by the suite:

    python -P _telegram_child.py PACKAGE_DIR JOURNAL FACTS MODE

Both modes wire `Bot` into a python-telegram-bot `Application` whose Bot API is
`FakeBotAPI` (no network), with the durable journal `JOURNAL`. `MODE` "hold": three
updates go through `Application.process_update` ("hang", "second", "third"); the
handler of "hang" writes the fact `hold Update 1 hang` and waits forever; once the
three are journaled the child prints "journaled", and the parent kills it with
SIGKILL. `MODE` "after": the same journal replays the three first; a fourth update
follows; each turn writes `after <type> <update_id> <text> bound|unbound
redelivered|new` and replies with `reply_text`; once the fourth is handled the child
writes the replies it sent and exits 0.

Facts are appended one line per `os.write` on an `O_APPEND` descriptor, so a line
written before the SIGKILL is in the file.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    package_dir, journal, facts_path, mode = argv[1:5]
    sys.path.insert(0, package_dir)
    from telegram import Update
    from telegram.ext import ApplicationBuilder

    from actors import Context, UserActor
    from supervisors.adapters.ptb import inorder_for
    from tests._telegram_fake import TOKEN, FakeBotAPI, update_json

    facts = os.open(facts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done = asyncio.Event()
    api = FakeBotAPI()
    app = ApplicationBuilder().token(TOKEN).request(api).get_updates_request(FakeBotAPI()).build()

    def fact(line: str) -> None:
        os.write(facts, (line + "\n").encode())

    class Bot(UserActor):
        async def on_message(self, update: Any, ctx: Context) -> None:
            text = update.effective_message.text
            if mode == "hold":
                fact(f"hold {type(update).__name__} {update.update_id} {text}")
                await asyncio.Event().wait()  # killed here
            bound = "bound" if update.get_bot() is app.bot else "unbound"
            how = "redelivered" if ctx.redelivered else "new"
            fact(f"after {type(update).__name__} {update.update_id} {text} {bound} {how}")
            await update.effective_message.reply_text(f"re: {text}")
            if text == "fourth":
                done.set()

    bridge = inorder_for(app, Bot, store=journal, idle_timeout=None)

    async def run() -> None:
        async with app, bridge:
            if mode == "hold":
                for i, text in enumerate(("hang", "second", "third"), 1):
                    await app.process_update(Update.de_json(update_json(i, 7, text), app.bot))
                print("journaled", flush=True)  # each send returned: committed
                await asyncio.Event().wait()
            else:
                await app.process_update(Update.de_json(update_json(4, 7, "fourth"), app.bot))
                await asyncio.wait_for(done.wait(), 20)
        fact("sent " + "|".join(text for _, text in api.sent))

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
