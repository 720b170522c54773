"""The child process of the Telegram adapters' crash tests: a bot killed mid-reply.

Run as a script, never imported by the suite:

    python -P _telegram_child.py PACKAGE_DIR JOURNAL FACTS MODE [ptb|aiogram]

Both modes wire `Agent` into a python-telegram-bot `Application` (tests/
test_adapter_telegram.py) or an aiogram `Dispatcher` (tests/test_adapter_aiogram.py)
whose Bot API is the fake of tests/_telegram_fake.py (no network), with the durable
journal `JOURNAL`. `MODE` "hold": three updates go through the framework's own
dispatch ("hang", "second", "third"); the handler of "hang" writes the fact `hold
Update 1 hang` and waits forever; once the three are journaled the child prints
"journaled", and the parent kills it with SIGKILL. `MODE` "after": the same journal
replays the three first; a fourth update follows; each turn writes `after <type>
<update_id> <text> bound|unbound redelivered|new` (bound: the update is tied to this
process's bot) and replies through the framework; once the fourth is handled the
child writes the replies it sent and exits 0.

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
    framework = argv[5] if len(argv) > 5 else "ptb"
    sys.path.insert(0, package_dir)
    # The fakes live in the tests, beside the sources (after them: in a compiled run
    # PACKAGE_DIR holds the compiled package, which must win).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from actors import Context, UserActor

    facts = os.open(facts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done = asyncio.Event()

    def fact(line: str) -> None:
        os.write(facts, (line + "\n").encode())

    class Agent(UserActor):
        async def on_message(self, update: Any, ctx: Context) -> None:
            message = update.effective_message if framework == "ptb" else update.message
            text = message.text
            if mode == "hold":
                fact(f"hold {type(update).__name__} {update.update_id} {text}")
                await asyncio.Event().wait()  # killed here
            bot = update.get_bot() if framework == "ptb" else update.bot
            bound = "bound" if bot is the_bot else "unbound"
            how = "redelivered" if ctx.redelivered else "new"
            fact(f"after {type(update).__name__} {update.update_id} {text} {bound} {how}")
            if framework == "ptb":
                await message.reply_text(f"re: {text}")
            else:
                await message.answer(f"re: {text}")
            if text == "fourth":
                done.set()

    if framework == "ptb":
        from telegram import Update
        from telegram.ext import ApplicationBuilder

        from supervisors.adapters.ptb import inorder_for
        from tests._telegram_fake import TOKEN, FakeBotAPI, update_json

        api: Any = FakeBotAPI()
        app = ApplicationBuilder().token(TOKEN).request(api).get_updates_request(FakeBotAPI())
        application = app.build()
        the_bot: Any = application.bot
        bridge = inorder_for(application, Agent, store=journal, idle_timeout=None)

        async def feed(data: dict[str, Any]) -> None:
            await application.process_update(Update.de_json(data, the_bot))

        async def begin() -> None:
            await application.initialize()

        async def end() -> None:
            await application.shutdown()
    else:
        from aiogram import Bot, Dispatcher
        from aiogram.types import Update as AiogramUpdate

        from supervisors.adapters.aiogram3 import inorder_for as aiogram_inorder_for
        from tests._telegram_fake import TOKEN, FakeSession, update_json

        api = FakeSession()
        the_bot = Bot(TOKEN, session=api)
        dp = Dispatcher()
        bridge = aiogram_inorder_for(dp, Agent, bot=the_bot, store=journal, idle_timeout=None)

        async def feed(data: dict[str, Any]) -> None:
            update = AiogramUpdate.model_validate(data, context={"bot": the_bot})
            await dp.feed_update(the_bot, update)

        async def begin() -> None:
            await dp.emit_startup(bot=the_bot)

        async def end() -> None:
            await dp.emit_shutdown(bot=the_bot)

    async def run() -> None:
        await begin()
        async with bridge:
            if mode == "hold":
                for i, text in enumerate(("hang", "second", "third"), 1):
                    await feed(update_json(i, 7, text))
                print("journaled", flush=True)  # each send returned: committed
                await asyncio.Event().wait()
            else:
                await feed(update_json(4, 7, "fourth"))
                await asyncio.wait_for(done.wait(), 20)
        await end()
        fact("sent " + "|".join(text for _, text in api.sent))

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
