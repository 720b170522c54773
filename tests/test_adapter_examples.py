"""The example bots of examples/: each runs without a token (says what it would do,
exits 0, touches no network), and its actor does what its docstring says when fed
through its framework with the network replaced (tests/_telegram_fake.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import in_flight

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["telegram_bot", "aiogram_bot"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_without_a_token_the_example_says_what_it_would_do_and_exits_0(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{name}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "is not set, so nothing is sent" in done.stdout
    assert done.stderr == ""


async def test_the_telegram_examples_agent_answers_in_order_and_stops_on_stop() -> None:
    from telegram import Update
    from telegram.ext import ApplicationBuilder

    from examples.telegram_bot import Agent
    from supervisors.adapters.ptb import inorder_for
    from tests._telegram_fake import TOKEN, FakeBotAPI, update_json

    api = FakeBotAPI()
    app = ApplicationBuilder().token(TOKEN).request(api).get_updates_request(FakeBotAPI()).build()
    bridge = inorder_for(app, Agent, clears=("stop",), idle_timeout=None)
    async with app, bridge:
        for i, text in enumerate(["first", "second", "/stop"], 1):
            await app.process_update(Update.de_json(update_json(i, 7, text), app.bot))
            if text == "first":
                await in_flight(bridge.runtime, 1)  # its "LLM call" has begun
        await asyncio.wait_for(bridge.runtime.wait_idle(), 10)
    assert api.sent == [(7, "Stopped.")]
    stats = bridge.runtime.stats()
    assert (stats["interrupted"], stats["dropped"]) == (1, 1)


async def test_the_aiogram_examples_agent_answers_in_order_and_stops_on_stop() -> None:
    from aiogram import Bot, Dispatcher
    from aiogram.types import Update

    from examples.aiogram_bot import Agent
    from supervisors.adapters.aiogram3 import inorder_for
    from tests._telegram_fake import TOKEN, FakeSession, update_json

    api = FakeSession()
    bot, dp = Bot(TOKEN, session=api), Dispatcher()
    bridge = inorder_for(dp, Agent, bot=bot, clears=("stop",), idle_timeout=None)
    await dp.emit_startup(bot=bot)
    try:
        for i, text in enumerate(["first", "second", "/stop"], 1):
            update = Update.model_validate(update_json(i, 7, text), context={"bot": bot})
            await dp.feed_update(bot, update)
            if text == "first":
                await in_flight(bridge.runtime, 1)  # its "LLM call" has begun
        await asyncio.wait_for(bridge.runtime.wait_idle(), 10)
    finally:
        await dp.emit_shutdown(bot=bot)
    assert api.sent == [(7, "Stopped.")]
    stats = bridge.runtime.stats()
    assert (stats["interrupted"], stats["dropped"]) == (1, 1)
