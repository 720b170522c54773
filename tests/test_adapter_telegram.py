"""The python-telegram-bot adapter, through PTB's own dispatch and HTTP seam, no network.

Updates are Bot API JSON turned into `telegram.Update` by PTB (`Update.de_json`)
and fed to `Application.process_update`, or served by `getUpdates` to a real
`run_polling()`; every Bot API call goes through `FakeBotAPI`, PTB's `BaseRequest`
(tests/_telegram_fake.py). Replies are real `reply_text` calls.
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
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, CommandHandler

import actors
from actors import Context, UserActor
from actors.testing import FakeClock
from supervisors import RedisCluster
from supervisors.adapters.ptb import (
    Bridge,
    by_chat,
    by_topic,
    by_user,
    command_of,
    inorder_for,
    retry_after_of,
)
from tests._telegram_fake import TOKEN, FakeBotAPI, update_json

pytestmark = pytest.mark.timeout(60)

SEEN: list[tuple[Any, str, int]] = []
GATE: dict[str, asyncio.Event] = {}


class Echo(UserActor):
    """Replies to each message; "hang" holds its turn until it is interrupted."""

    async def on_message(self, update: Update, ctx: Context) -> str:
        message = update.effective_message
        assert isinstance(update, Update)
        assert message is not None
        assert message.text
        SEEN.append((ctx.key, message.text, ctx.priority))
        if message.text == "hang":
            GATE["hanging"].set()
            await asyncio.Event().wait()
        await asyncio.sleep(0)  # let other chats interleave
        await message.reply_text(f"re: {message.text}")
        return message.text


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()
    GATE.clear()
    GATE["hanging"] = asyncio.Event()


def application(api: FakeBotAPI) -> Application[Any, Any, Any, Any, Any, Any]:
    return ApplicationBuilder().token(TOKEN).request(api).get_updates_request(FakeBotAPI()).build()


async def feed(app: Application[Any, Any, Any, Any, Any, Any], data: dict[str, Any]) -> None:
    await app.process_update(Update.de_json(data, app.bot))


class Wired:
    def __init__(self, api: FakeBotAPI, app: Any, bridge: Bridge) -> None:
        self.api, self.app, self.bridge, self.rt = api, app, bridge, bridge.runtime


@contextlib.asynccontextmanager
async def wired(**options: Any) -> AsyncIterator[Wired]:
    api = FakeBotAPI()
    app = application(api)
    options.setdefault("idle_timeout", None)
    bridge = inorder_for(app, options.pop("cls", Echo), **options)
    async with app, bridge:
        yield Wired(api, app, bridge)


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
            await feed(bot.app, update_json(n, chat, f"m{i}"))
    await asyncio.wait_for(bot.rt.wait_idle(), 10)
    for chat in chats:
        assert [t for k, t, _ in SEEN if k == f"telegram:{chat}"] == [f"m{i}" for i in range(10)]
        assert [t for c, t in bot.api.sent if c == chat] == [f"re: m{i}" for i in range(10)]
    assert bot.rt.stats()["handled"] == 200


async def test_stop_interrupts_the_reply_in_flight_and_clears_what_waits() -> None:
    async with wired(clears=("stop",)) as w:
        await feed(w.app, update_json(1, 7, "hang"))
        await asyncio.wait_for(GATE["hanging"].wait(), 5)
        await feed(w.app, update_json(2, 7, "waiting"))
        await feed(w.app, update_json(3, 7, "/stop"))
        await asyncio.wait_for(w.rt.wait_idle(), 5)
        stats = w.rt.stats()
        assert (stats["interrupted"], stats["dropped"], stats["handled"]) == (1, 1, 1)
        assert SEEN == [("telegram:7", "hang", 0), ("telegram:7", "/stop", 10)]
        assert w.api.sent == [(7, "re: /stop")]


async def test_cancel_interrupts_without_clearing(bot: Wired) -> None:
    await feed(bot.app, update_json(1, 7, "hang"))
    await asyncio.wait_for(GATE["hanging"].wait(), 5)
    await feed(bot.app, update_json(2, 7, "waiting"))
    await feed(bot.app, update_json(3, 7, "/cancel@InorderBot"))
    await asyncio.wait_for(bot.rt.wait_idle(), 5)
    assert [t for _, t, _ in SEEN] == ["hang", "/cancel@InorderBot", "waiting"]
    assert bot.rt.stats()["interrupted"] == 1


async def test_a_command_for_another_bot_or_not_named_is_a_plain_message(bot: Wired) -> None:
    await feed(bot.app, update_json(1, 7, "/stop@OtherBot"))
    await feed(bot.app, update_json(2, 7, "/help"))
    await asyncio.wait_for(bot.rt.wait_idle(), 5)
    assert [p for _, _, p in SEEN] == [0, 0]


async def test_a_redelivered_update_is_handled_once(bot: Wired) -> None:
    for _ in range(3):
        await feed(bot.app, update_json(41, 7, "once"))
    await feed(bot.app, update_json(42, 7, "twice"))
    await asyncio.wait_for(bot.rt.wait_idle(), 5)
    assert [t for _, t, _ in SEEN] == ["once", "twice"]
    assert bot.rt.stats()["duplicates"] == 2


async def test_flood_control_reruns_the_same_update_after_telegrams_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PTB's RetryAfter warns of its int deprecation unless told to use timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    clock = FakeClock()
    async with wired(clock=clock) as w:
        w.api.flood[7] = 3
        await feed(w.app, update_json(1, 7, "hello"))
        await asyncio.sleep(0)
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


async def test_updates_without_a_key_go_on_to_the_applications_handlers() -> None:
    handled: list[str] = []

    async def start(update: Update, _context: Any) -> None:
        assert update.effective_message is not None
        handled.append(str(update.effective_message.text))

    def only_private(update: Update) -> str | None:
        chat = update.effective_chat
        return by_chat(update) if chat is not None and chat.id > 0 else None

    async with wired(key=only_private) as w:
        w.app.add_handler(CommandHandler("start", start))
        await feed(w.app, update_json(1, -100, "/start"))  # a group: left to PTB
        await feed(w.app, update_json(2, 5, "/start"))  # a private chat: to the actor
        await asyncio.wait_for(w.rt.wait_idle(), 5)
        assert handled == ["/start"]
        assert [(k, t) for k, t, _ in SEEN] == [("telegram:5", "/start")]


def test_run_polling_starts_and_stops_the_runtime_with_the_users_own_hooks() -> None:
    api = FakeBotAPI([update_json(i, 7, f"m{i}") for i in range(1, 4)])
    app = ApplicationBuilder().token(TOKEN).request(FakeBotAPI()).get_updates_request(api).build()
    calls: list[tuple[str, str]] = []
    box: dict[str, Bridge] = {}

    class Stopper(UserActor):
        async def on_message(self, update: Update, ctx: Context) -> None:
            SEEN.append((ctx.key, str(update.effective_message.text), 0))  # type: ignore[union-attr]
            if len(SEEN) == 3:
                app.stop_running()

    async def hook(name: str, _app: Any) -> None:
        calls.append((name, box["bridge"].runtime.stats()["state"]))

    app.post_init = lambda a: hook("post_init", a)
    app.post_stop = lambda a: hook("post_stop", a)
    app.post_shutdown = lambda a: hook("post_shutdown", a)
    box["bridge"] = inorder_for(app, Stopper, idle_timeout=None)
    assert box["bridge"].runtime.stats()["state"] == "new"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app.run_polling(stop_signals=None, close_loop=False, poll_interval=0.0)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert [t for _, t, _ in SEEN] == ["m1", "m2", "m3"]
    # The runtime runs from before the user's post_init to after the user's post_stop.
    assert calls == [
        ("post_init", "running"),
        ("post_stop", "running"),
        ("post_shutdown", "stopped"),
    ]
    assert box["bridge"].runtime.stats()["handled"] == 3


async def test_an_update_crosses_the_codec_as_json_and_comes_back_bound_to_the_bot(
    bot: Wired,
) -> None:
    update = Update.de_json(update_json(9, 7, "/stop@InorderBot now", thread=3), bot.app.bot)
    codec = bot.bridge.codec
    back = codec.loads(codec.dumps(update))
    assert type(back) is Update
    assert back == update
    assert back.to_dict() == update.to_dict()
    assert back.get_bot() is bot.app.bot
    assert back.effective_message is not None
    await back.effective_message.reply_text("after the journal")
    assert bot.api.sent == [(7, "after the journal")]


async def test_a_durable_run_hands_the_actor_the_ptb_update(tmp_path: Path) -> None:
    kinds: list[tuple[type, bool]] = []

    class Kind(UserActor):
        async def on_message(self, update: Any, ctx: Context) -> None:
            kinds.append((type(update), update.get_bot() is app.bot))

    api = FakeBotAPI()
    app = application(api)
    bridge = inorder_for(app, Kind, store=str(tmp_path / "bot.db"), idle_timeout=None)
    async with app, bridge:
        await feed(app, update_json(1, 7, "hi"))
        await asyncio.wait_for(bridge.runtime.wait_idle(), 5)
    assert kinds == [(Update, True)]


async def test_a_cluster_run_carries_the_ptb_update_through_redis(redis_url: str) -> None:
    kinds: list[tuple[type, str, bool]] = []
    done = asyncio.Event()

    class Kind(UserActor):
        async def on_message(self, update: Any, ctx: Context) -> None:
            kinds.append((type(update), update.effective_message.text, update.get_bot() is app.bot))
            done.set()

    api = FakeBotAPI()
    app = application(api)
    cluster = RedisCluster(
        redis_url, n_shards=4, lease_ttl=1.0, tick=0.05, member_ttl=0.5, join_grace=0.0
    )
    bridge = inorder_for(app, Kind, cluster=cluster, idle_timeout=None)
    async with app, bridge:
        await feed(app, update_json(1, 7, "through redis"))
        await asyncio.wait_for(done.wait(), 10)
    assert kinds == [(Update, "through redis", True)]


def test_keys_ids_and_commands() -> None:
    plain = Update.de_json(update_json(5, 42, "/Stop@InorderBot now", user_id=9), None)
    topic = Update.de_json(update_json(6, -100, "hi", thread=17, user_id=9), None)
    inline = Update.de_json(
        {"update_id": 7, "inline_query": {"id": "q", "from": {"id": 9, "is_bot": False,
         "first_name": "U"}, "query": "x", "offset": ""}},
        None,
    )  # fmt: skip
    assert (by_chat(plain), by_topic(plain), by_user(plain)) == (
        "telegram:42",
        "telegram:42",
        "telegram:user:9",
    )
    assert (by_chat(topic), by_topic(topic)) == ("telegram:-100", "telegram:-100:17")
    assert by_chat(inline) == "telegram:9"  # the user's private chat
    assert by_chat(Update.de_json({"update_id": 8}, None)) is None
    assert command_of(plain, "inorderbot") == "stop"
    assert command_of(plain, "OtherBot") is None
    assert command_of(plain) == "stop"
    assert command_of(topic) is None


def test_retry_after_of_reads_telegrams_wait_in_either_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    from telegram.error import BadRequest, RetryAfter

    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    assert retry_after_of(RetryAfter(5)) == 5.0
    assert retry_after_of(RetryAfter(timedelta(seconds=1.5))) == 1.5
    assert retry_after_of(BadRequest("no")) is None
    assert retry_after_of(ValueError()) is None


def test_bad_arguments_fail_at_the_call_site() -> None:
    app = application(FakeBotAPI())
    with pytest.raises(TypeError, match=r"telegram\.ext\.Application"):
        inorder_for(object(), Echo)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="collection of command names"):
        inorder_for(app, Echo, interrupts="stop")
    with pytest.raises(ValueError, match="a command is"):
        inorder_for(app, Echo, clears=("st op",))
    with pytest.raises(ValueError, match="priority"):
        inorder_for(app, Echo, priority=0)
    with pytest.raises(ValueError, match="send_timeout"):
        inorder_for(app, Echo, send_timeout=-1)
    with pytest.raises(TypeError, match="key"):
        inorder_for(app, Echo, key="chat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        inorder_for(app, Echo, idle_timeout=-1)  # the Runtime's own check
    assert app.handlers == {}  # nothing half-wired


def test_importing_without_ptb_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['telegram'] = None\n"
        "try:\n    import supervisors.adapters.ptb\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert "pip install 'inorder[telegram]'" in out.stdout


# -- through a kill -9 ----------------------------------------------------------------

CHILD = Path(__file__).with_name("_telegram_child.py")
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent


def test_a_killed_bot_replays_its_journaled_updates_as_ptb_updates(tmp_path: Path) -> None:
    journal, facts = tmp_path / "bot.db", tmp_path / "facts"
    args = [sys.executable, "-P", str(CHILD), str(PACKAGE_DIR), str(journal), str(facts)]
    holder = subprocess.Popen([*args, "hold"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "journaled"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    after = subprocess.run([*args, "after"], timeout=60, check=False)
    assert after.returncode == 0
    lines = facts.read_text().splitlines()
    assert lines[0] == "hold Update 1 hang"
    # Replayed as PTB's own objects, bound to the new process's bot, in order.
    assert lines[1:] == [
        "after Update 1 hang bound redelivered",
        "after Update 2 second bound redelivered",
        "after Update 3 third bound redelivered",
        "after Update 4 fourth bound new",
        "sent re: hang|re: second|re: third|re: fourth",
    ]
    assert "journaled" not in lines
