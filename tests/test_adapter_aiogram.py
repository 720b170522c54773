"""The aiogram adapter, through aiogram's own dispatch and HTTP seam, no network.

Updates are Bot API JSON turned into `aiogram.types.Update` by aiogram
(`Update.model_validate(..., context={"bot": bot})`) and fed to
`Dispatcher.feed_update`, or served by `getUpdates` to a real `start_polling()`;
every Bot API call goes through `FakeSession`, aiogram's `BaseSession`
(tests/_telegram_fake.py), whose answers aiogram checks itself. Replies are real
`message.answer` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.filters import CommandStart
from aiogram.methods import SendMessage
from aiogram.types import Message, Update

import actors
from actors import Context, UserActor
from actors.testing import FakeClock
from supervisors import RedisCluster
from supervisors.adapters.aiogram3 import (
    Bridge,
    by_chat,
    by_topic,
    by_user,
    command_of,
    inorder_for,
    retry_after_of,
)
from tests._telegram_fake import TOKEN, FakeSession, update_json

pytestmark = pytest.mark.timeout(60)

SEEN: list[tuple[Any, str, int]] = []
GATE: dict[str, asyncio.Event] = {}


class Echo(UserActor):
    """Answers each message; "hang" holds its turn until it is interrupted."""

    async def on_message(self, update: Update, ctx: Context) -> str:
        assert isinstance(update, Update)
        message = update.message
        assert message is not None
        assert message.text
        SEEN.append((ctx.key, message.text, ctx.priority))
        if message.text == "hang":
            GATE["hanging"].set()
            await asyncio.Event().wait()
        await asyncio.sleep(0)  # let other chats interleave
        await message.answer(f"re: {message.text}")
        return message.text


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()
    GATE.clear()
    GATE["hanging"] = asyncio.Event()


class Wired:
    def __init__(self, api: FakeSession, bot: Bot, dp: Dispatcher, bridge: Bridge) -> None:
        self.api, self.bot, self.dp, self.bridge, self.rt = api, bot, dp, bridge, bridge.runtime

    async def feed(self, data: dict[str, Any]) -> Any:
        return await self.dp.feed_update(
            self.bot, Update.model_validate(data, context={"bot": self.bot})
        )


@contextlib.asynccontextmanager
async def wired(**options: Any) -> AsyncIterator[Wired]:
    api = FakeSession()
    bot = Bot(TOKEN, session=api)
    dp = Dispatcher()
    options.setdefault("idle_timeout", None)
    bridge = inorder_for(dp, options.pop("cls", Echo), bot=bot, **options)
    await dp.emit_startup(bot=bot)
    try:
        yield Wired(api, bot, dp, bridge)
    finally:
        await dp.emit_shutdown(bot=bot)


@pytest.fixture
async def bot() -> AsyncIterator[Wired]:
    async with wired() as w:
        yield w


async def test_each_chat_in_order_many_chats_at_once(bot: Wired) -> None:
    chats = [1000 + c for c in range(20)]
    n = 0
    for i in range(10):
        for chat in chats:
            n += 1
            await bot.feed(update_json(n, chat, f"m{i}"))
    await asyncio.wait_for(bot.rt.wait_idle(), 10)
    for chat in chats:
        assert [t for k, t, _ in SEEN if k == f"telegram:{chat}"] == [f"m{i}" for i in range(10)]
        assert [t for c, t in bot.api.sent if c == chat] == [f"re: m{i}" for i in range(10)]
    assert bot.rt.stats()["handled"] == 200


async def test_updates_handled_as_concurrent_tasks_keep_their_order_under_backpressure() -> None:
    """aiogram's polling runs each update as a task of its own (`handle_as_tasks`); with a
    mailbox of 2, most of them wait for room, and still reach the chat in order."""
    async with wired(max_pending=2) as w:
        tasks = [asyncio.create_task(w.feed(update_json(n, 7, f"m{n}"))) for n in range(1, 21)]
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await asyncio.wait_for(w.rt.wait_idle(), 10)
    assert [t for _, t, _ in SEEN] == [f"m{n}" for n in range(1, 21)]
    assert [t for _, t in w.api.sent] == [f"re: m{n}" for n in range(1, 21)]


async def test_stop_interrupts_the_reply_in_flight_and_clears_what_waits() -> None:
    async with wired(clears=("stop",)) as w:
        await w.feed(update_json(1, 7, "hang"))
        await asyncio.wait_for(GATE["hanging"].wait(), 5)
        await w.feed(update_json(2, 7, "waiting"))
        await w.feed(update_json(3, 7, "/stop"))
        await asyncio.wait_for(w.rt.wait_idle(), 5)
        stats = w.rt.stats()
        assert (stats["interrupted"], stats["dropped"], stats["handled"]) == (1, 1, 1)
        assert SEEN == [("telegram:7", "hang", 0), ("telegram:7", "/stop", 10)]
        assert w.api.sent == [(7, "re: /stop")]


async def test_cancel_for_this_bot_interrupts_and_one_for_another_bot_does_not(
    bot: Wired,
) -> None:
    await bot.feed(update_json(1, 7, "hang"))
    await asyncio.wait_for(GATE["hanging"].wait(), 5)
    await bot.feed(update_json(2, 7, "/cancel@OtherBot"))
    await bot.feed(update_json(3, 7, "/cancel@InorderBot"))
    await asyncio.wait_for(bot.rt.wait_idle(), 5)
    assert [(t, p) for _, t, p in SEEN] == [
        ("hang", 0),
        ("/cancel@InorderBot", 10),
        ("/cancel@OtherBot", 0),
    ]
    assert bot.rt.stats()["interrupted"] == 1


async def test_a_redelivered_update_is_handled_once(bot: Wired) -> None:
    for _ in range(3):
        await bot.feed(update_json(41, 7, "once"))
    await bot.feed(update_json(42, 7, "twice"))
    await asyncio.wait_for(bot.rt.wait_idle(), 5)
    assert [t for _, t, _ in SEEN] == ["once", "twice"]
    assert bot.rt.stats()["duplicates"] == 2


async def test_flood_control_reruns_the_same_update_after_telegrams_wait() -> None:
    clock = FakeClock()
    async with wired(clock=clock) as w:
        w.api.flood[7] = 3
        await w.feed(update_json(1, 7, "hello"))
        for _ in range(50):
            if w.rt.stats()["retry_afters"]:
                break
            await asyncio.sleep(0)
        assert w.rt.stats()["retry_afters"] == 1
        assert w.api.sent == []
        await clock.advance(2.9)
        assert w.api.sent == []
        await clock.advance(0.2)
        await asyncio.wait_for(w.rt.wait_idle(), 5)
        assert w.api.sent == [(7, "re: hello")]
        stats = w.rt.stats()
        assert (stats["handled"], stats["failed"], stats["restarts"]) == (1, 0, 0)


async def test_updates_without_a_key_go_on_to_the_routers() -> None:
    handled: list[str] = []

    def only_private(update: Update) -> str | None:
        return by_chat(update) if update.message and update.message.chat.id > 0 else None

    async with wired(key=only_private) as w:

        @w.dp.message(CommandStart())
        async def start(message: Message) -> None:
            handled.append(str(message.text))

        await w.feed(update_json(1, -100, "/start"))  # a group: left to the routers
        await w.feed(update_json(2, 5, "/start"))  # a private chat: to the actor
        await asyncio.wait_for(w.rt.wait_idle(), 5)
        assert handled == ["/start"]
        assert [(k, t) for k, t, _ in SEEN] == [("telegram:5", "/start")]


async def test_start_polling_starts_and_stops_the_runtime_with_the_users_own_handlers() -> None:
    api = FakeSession([update_json(i, 7, f"m{i}") for i in range(1, 4)])
    bot = Bot(TOKEN, session=api)
    dp = Dispatcher()
    calls: list[tuple[str, str]] = []
    box: dict[str, Bridge] = {}
    stopping: list[asyncio.Task[None]] = []

    class Stopper(UserActor):
        async def on_message(self, update: Update, ctx: Context) -> None:
            SEEN.append((ctx.key, str(update.message.text), 0))  # type: ignore[union-attr]
            if len(SEEN) == 3:
                # Not awaited: stop_polling() waits for the shutdown, whose drain
                # waits for this very handler.
                stopping.append(asyncio.create_task(dp.stop_polling()))

    @dp.startup()
    async def user_startup() -> None:
        calls.append(("startup", box["bridge"].runtime.stats()["state"]))

    box["bridge"] = inorder_for(dp, Stopper, bot=bot, idle_timeout=None)

    @dp.shutdown()
    async def user_shutdown() -> None:
        calls.append(("shutdown", box["bridge"].runtime.stats()["state"]))

    assert box["bridge"].runtime.stats()["state"] == "new"
    await asyncio.wait_for(dp.start_polling(bot, handle_signals=False, polling_timeout=0), 20)
    await stopping[0]
    assert [t for _, t, _ in SEEN] == ["m1", "m2", "m3"]
    # The runtime starts before the user's startup handler, registered before it, and
    # stops at its place among the shutdown handlers: before those registered after it.
    assert calls == [("startup", "running"), ("shutdown", "stopped")]
    assert box["bridge"].runtime.stats()["handled"] == 3


async def test_an_update_crosses_the_codec_as_bot_api_json_bound_to_the_bot(bot: Wired) -> None:
    data = update_json(9, 7, "/stop@InorderBot now", thread=3)
    update = Update.model_validate(data, context={"bot": bot.bot})
    codec = bot.bridge.codec
    back = codec.loads(codec.dumps(update))
    assert type(back) is Update
    assert back == update
    assert back.model_dump(mode="json", exclude_unset=True, by_alias=True) == data
    assert back.bot is bot.bot
    assert back.message is not None
    await back.message.answer("after the journal")
    assert bot.api.sent == [(7, "after the journal")]


async def test_a_cluster_run_carries_the_aiogram_update_through_redis(redis_url: str) -> None:
    kinds: list[tuple[type, str, bool]] = []
    done = asyncio.Event()

    class Kind(UserActor):
        async def on_message(self, update: Any, ctx: Context) -> None:
            kinds.append((type(update), update.message.text, update.bot is w.bot))
            done.set()

    cluster = RedisCluster(
        redis_url, n_shards=4, lease_ttl=1.0, tick=0.05, member_ttl=0.5, join_grace=0.0
    )
    async with wired(cls=Kind, cluster=cluster) as w:
        await w.feed(update_json(1, 7, "through redis"))
        await asyncio.wait_for(done.wait(), 10)
    assert kinds == [(Update, "through redis", True)]


def test_keys_ids_and_commands() -> None:
    plain = Update.model_validate(update_json(5, 42, "/Stop@InorderBot now", user_id=9))
    topic = Update.model_validate(update_json(6, -100, "hi", thread=17, user_id=9))
    inline = Update.model_validate(
        {"update_id": 7, "inline_query": {"id": "q", "from": {"id": 9, "is_bot": False,
         "first_name": "U"}, "query": "x", "offset": ""}}
    )  # fmt: skip
    assert (by_chat(plain), by_topic(plain), by_user(plain)) == (
        "telegram:42",
        "telegram:42",
        "telegram:user:9",
    )
    assert (by_chat(topic), by_topic(topic)) == ("telegram:-100", "telegram:-100:17")
    assert by_chat(inline) == "telegram:9"
    assert by_chat(Update.model_validate({"update_id": 8})) is None
    assert command_of(plain, "inorderbot") == "stop"
    assert command_of(plain, "OtherBot") is None
    assert command_of(topic) is None


def test_retry_after_of_reads_aiograms_flood_error() -> None:
    method = SendMessage(chat_id=1, text="x")
    assert retry_after_of(TelegramRetryAfter(method, "flood", 5)) == 5.0
    assert retry_after_of(TelegramBadRequest(method, "no")) is None
    assert retry_after_of(ValueError()) is None


def test_bad_arguments_fail_at_the_call_site(tmp_path: Path) -> None:
    dp = Dispatcher()
    before = list(dp.update.outer_middleware)
    with pytest.raises(TypeError, match="aiogram Dispatcher"):
        inorder_for(object(), Echo)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="give bot="):
        inorder_for(dp, Echo, store=str(tmp_path / "x.db"))
    with pytest.raises(TypeError, match="aiogram Bot"):
        inorder_for(dp, Echo, bot="bot")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="collection of command names"):
        inorder_for(dp, Echo, interrupts="stop")
    with pytest.raises(ValueError, match="priority"):
        inorder_for(dp, Echo, priority=-1)
    with pytest.raises(ValueError, match="max_pending"):
        inorder_for(dp, Echo, max_pending=0)  # the Runtime's own check
    assert dp.startup.handlers == []  # nothing half-wired
    assert list(dp.update.outer_middleware) == before


def test_importing_without_aiogram_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['aiogram'] = None\n"
        "try:\n    import supervisors.adapters.aiogram3\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert "pip install 'inorder[aiogram]'" in out.stdout


# -- through a kill -9 ----------------------------------------------------------------

CHILD = Path(__file__).with_name("_telegram_child.py")
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent


def test_a_killed_bot_replays_its_journaled_updates_as_aiogram_updates(tmp_path: Path) -> None:
    journal, facts = tmp_path / "bot.db", tmp_path / "facts"
    args = [sys.executable, "-P", str(CHILD), str(PACKAGE_DIR), str(journal), str(facts)]
    holder = subprocess.Popen([*args, "hold", "aiogram"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "journaled"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    after = subprocess.run([*args, "after", "aiogram"], timeout=60, check=False)
    assert after.returncode == 0
    lines = facts.read_text().splitlines()
    assert lines == [
        "hold Update 1 hang",
        "after Update 1 hang bound redelivered",
        "after Update 2 second bound redelivered",
        "after Update 3 third bound redelivered",
        "after Update 4 fourth bound new",
        "sent re: hang|re: second|re: third|re: fourth",
    ]
